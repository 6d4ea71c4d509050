"""Optuna sweeps: search spaces, the pruning callback, and real sweeps through the CLI that
are killed and resumed, hold a failing trial, and prune a bad one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnet_lab.configs import config_dir
from resnet_lab.errors import ConfigError
from resnet_lab.runs.__main__ import main as runs_main
from resnet_lab.runs.run import Run
from resnet_lab.sweeps.naming import sweep_key
from resnet_lab.sweeps.pruning import OptunaPruning
from resnet_lab.sweeps.search_space import parse_search_space
from tests.helpers import REPO, TINY

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_search_space_uses_hydra_sweep_syntax():
    space, fixed = parse_search_space([
        "optimizer.lr=tag(log, interval(0.01, 1.0))",
        "module.label_smoothing=interval(0.0, 0.2)",
        "data.batch_size=choice(64, 128)",
        "model=choice(resnet20, resnet56)",
        "trainer.max_epochs=range(10, 40, 10)",
        "scheduler.warmup_epochs=int(interval(0, 5))",
        "seed=3",
        "model.drop_path_rate=interval(0.0, 0.1)",
        "model.drop_path_rate=0.05",  # a later override pins a searched key
    ])
    assert space["optimizer.lr"] == FloatDistribution(0.01, 1.0, log=True)
    assert space["module.label_smoothing"] == FloatDistribution(0.0, 0.2)
    assert space["data.batch_size"] == CategoricalDistribution([64, 128])
    assert space["model"] == CategoricalDistribution(["resnet20", "resnet56"])
    assert space["trainer.max_epochs"] == IntDistribution(10, 30, step=10)  # stop excluded
    assert space["scheduler.warmup_epochs"] == IntDistribution(0, 5)
    assert fixed == ["seed=3", "model.drop_path_rate=0.05"]
    assert "model.drop_path_rate" not in space
    with pytest.raises(ConfigError, match="low > 0"):
        parse_search_space(["optimizer.lr=tag(log, interval(0.0, 1.0))"])


def test_sweep_dir_key_names_the_command():
    class Root:
        def __init__(self, task):
            self.hydra = type("H", (), {"overrides": type("O", (), {"task": task})})

    a = sweep_key(_root_=Root(["hparams_search=x", "data=cifar10"]))
    assert a == sweep_key(_root_=Root(["data=cifar10", "hparams_search=x"]))  # order-free
    assert a != sweep_key(_root_=Root(["hparams_search=x", "data=cifar100"]))
    assert len(a) == 8


def test_cifar10_resnet20_search_space_composes():
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="test"):
        cfg = compose("train", overrides=["hparams_search=cifar10_resnet20"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("ResnetLabOptunaSweeper")
    assert cfg.hydra.runtime.choices.data == "cifar10" and cfg.hydra.runtime.choices.model == "resnet20"
    space, fixed = parse_search_space([f"{k}={v}" for k, v in sweeper.params.items()])
    assert fixed == []
    assert set(space) == {"optimizer.lr", "optimizer.weight_decay", "module.label_smoothing"}
    assert space["optimizer.lr"].log and space["optimizer.weight_decay"].log
    for start in sweeper.enqueue:  # the recipe's values lie inside the search space
        for key, value in start.items():
            assert space[key]._contains(space[key].to_internal_repr(value)), (key, value)
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    callback = instantiate(cfg.callbacks.optuna_pruning)
    assert isinstance(callback, OptunaPruning) and callback.monitor == "val/acc_top1"
    assert isinstance(callback.pruner, optuna.pruners.MedianPruner)


class _Scored(L.LightningModule):
    """Logs a fixed `val/acc_top1` every epoch."""

    def __init__(self, score: float) -> None:
        super().__init__()
        self.net = nn.Linear(2, 2)
        self.score = score

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc_top1", self.score)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_pruning_callback_reports_each_epoch_and_prunes_a_bad_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1)
    data = DataLoader(TensorDataset(torch.randn(4, 2), torch.zeros(4)), batch_size=2)

    def fit(score: float) -> int:
        trial = study.ask()
        callback = OptunaPruning("val/acc_top1", pruner, {"storage": storage, "study_name": "s",
                                                          "number": trial.number})
        trainer = L.Trainer(max_epochs=4, callbacks=[callback], logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        try:
            trainer.fit(_Scored(score), data, data)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return trainer.current_epoch
        study.tell(trial, score)
        return trainer.current_epoch

    fit(0.9)
    assert study.trials[0].intermediate_values == pytest.approx({0: 0.9, 1: 0.9, 2: 0.9, 3: 0.9})
    assert fit(0.95) == 4  # better than the median: runs to the end
    assert fit(0.1) == 1  # worse: pruned at the first step after the warmup
    assert study.trials[2].state == TrialState.PRUNED
    assert study.trials[2].intermediate_values == pytest.approx({0: 0.1, 1: 0.1})


# ---------------------------------------------------------------------------------------
# Real sweeps through `python -m resnet_lab -m hparams_search=...`

SEARCH_SPACE = """\
# @package _global_
defaults:
  - override /hydra/sweeper: resnet_lab_optuna
hydra:
  sweep:
    dir: ${{writable_dir:${{paths.log_dir}}}}/sweeps/${{hydra.runtime.choices.hparams_search}}_${{sweep_key:}}
  sweeper:
    n_trials: {n_trials}
    sampler: {{_target_: optuna.samplers.TPESampler, seed: 0}}
    params: {params}
    enqueue: {enqueue}
callbacks:
  optuna_pruning:
    _target_: resnet_lab.sweeps.pruning.OptunaPruning
    monitor: ${{optimized_metric}}
    trial: ${{oc.select:optuna_trial,null}}
    pruner: {pruner}
"""


def _write_search_space(root: Path, name: str, **fields) -> str:
    folder = root / "conf" / "hparams_search"
    folder.mkdir(parents=True)
    (folder / f"{name}.yaml").write_text(SEARCH_SPACE.format(**fields))
    return f"hydra.searchpath=[file://{root / 'conf'}]"


def _sweep_command(searchpath: str, name: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "resnet_lab", "-m", searchpath, f"hparams_search={name}", *TINY,
            "data.noise=0.3", *overrides]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _study(sweep_dir: Path) -> optuna.Study:
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    return optuna.load_study(study_name=sweep_dir.name, storage=storage)


class HoldTrial(L.Callback):
    """Keeps the trial whose run directory is named ``name`` waiting in its first batch, so
    that the test kills the sweep in the middle of that trial: a tiny trial can start and
    end between two looks at its run.json."""

    def __init__(self, name: str = "1") -> None:
        self.name = name

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from hydra.core.hydra_config import HydraConfig

        if Path(HydraConfig.get().runtime.output_dir).name == self.name:
            time.sleep(3600)


@pytest.mark.slow
def test_killed_sweep_resumes_with_the_same_command(tmp_path):
    searchpath = _write_search_space(
        tmp_path, "tiny", n_trials=3, params="{optimizer.lr: 'tag(log, interval(0.05, 0.8))'}",
        enqueue="[]", pruner="{_target_: optuna.pruners.NopPruner}")
    # Trial 1 waits to be killed; its retry (another trial number) and the others run through.
    command = _sweep_command(searchpath, "tiny", "+callbacks.hold._target_=tests.test_sweeps.HoldTrial")
    env = {**_env(), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        # Kill it (SIGKILL: no cleanup of any kind) once trial 0 is done and trial 1 trains.
        deadline = time.monotonic() + 600
        while True:
            assert time.monotonic() < deadline, "the sweep never got to its second trial"
            assert sweep.poll() is None, sweep.stderr.read()[-3000:]
            dirs = list((tmp_path / "outputs" / "sweeps").glob("tiny_*"))
            record = dirs[0] / "1" / "run.json" if dirs else None
            if record and record.is_file() and json.loads(record.read_text()).get("status") == "running":
                break
            time.sleep(0.5)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(timeout=60)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    (sweep_dir,) = dirs
    states = [trial.state for trial in _study(sweep_dir).trials]
    assert states == [TrialState.COMPLETE, TrialState.RUNNING]

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "left running by a sweep that stopped" in again.stdout + again.stderr
    study = _study(sweep_dir)
    trials = study.trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3  # the planned number
    assert trials[1].state == TrialState.FAIL
    assert study.user_attrs["interrupted_trials"] == [1]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 1)
    assert retry.params == trials[1].params and retry.state == TrialState.COMPLETE
    assert len(trials) == 4
    # The killed trial's run directory is kept, and shows what happened to it.
    assert Run(sweep_dir / "1").status == "interrupted"
    assert all((sweep_dir / str(t.number) / "run.json").is_file() for t in trials)

    # Running the finished sweep's command again runs nothing more.
    third = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(_study(sweep_dir).trials) == 4


@pytest.mark.slow
def test_sweep_survives_a_failing_trial_and_prunes_a_bad_one(tmp_path, capsys):
    # Trials 0 and 1 learn (lr 0.8, 0.6); trial 2 cannot (lr 1e-7) and is pruned after its
    # second epoch (median pruner, one warmup epoch); trial 3 crashes when the optimizer is
    # built inside fit (torch's SGD refuses momentum -1).
    searchpath = _write_search_space(
        tmp_path, "mixed", n_trials=4,
        params="{optimizer.lr: 'tag(log, interval(1.0e-7, 1.0))', optimizer.momentum: 'choice(0.9, -1.0)'}",
        enqueue="[{optimizer.lr: 0.8, optimizer.momentum: 0.9}, {optimizer.lr: 0.6, optimizer.momentum: 0.9},"
                " {optimizer.lr: 1.0e-7, optimizer.momentum: 0.9}, {optimizer.lr: 0.8, optimizer.momentum: -1.0}]",
        pruner="{_target_: optuna.pruners.MedianPruner, n_startup_trials: 2, n_warmup_steps: 1}")
    result = subprocess.run(_sweep_command(searchpath, "mixed", "trainer.max_epochs=3"), cwd=tmp_path,
                            env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").glob("mixed_*")
    trials = _study(sweep_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.FAIL]
    assert trials[0].value > 0.5 and trials[1].value > 0.5
    assert sorted(trials[2].intermediate_values) == [0, 1]
    assert trials[2].intermediate_values[1] < 0.3
    pruned = Run(sweep_dir / "2")
    assert pruned.status == "pruned" and pruned.epochs == (2, 3)
    failed = Run(sweep_dir / "3")
    assert failed.status == "failed" and "momentum" in failed.record["exception"]

    assert runs_main(["sweep", str(sweep_dir), "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert [job["job"] for job in ranked["jobs"]][:2] == [str(t.number) for t in
                                                        sorted(trials[:2], key=lambda t: -t.value)]
    assert ranked["counts"] == {"finished": 2, "pruned": 1, "failed": 1}
    assert ranked["study"] == sweep_dir.name
    assert (sweep_dir / "optimization_results.yaml").is_file()
