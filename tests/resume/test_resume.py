"""Resume: exact continuation from any checkpoint, the real CLI killed and resumed, and every
bad resume request refused before any run directory is touched.

Tolerance: none. On the CPU in deterministic mode a resumed run must end with bit-identical
weights and metrics; anything less would hide a skipped batch or a replayed random draw.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from resnet_lab import resume as resume_module
from resnet_lab.checkpoint_files import load_checkpoint_file
from resnet_lab.configs import config_dir
from resnet_lab.loggers.csv_file import AppendingExperimentWriter
from resnet_lab.train import train
from tests.helpers import (
    REPO,
    TINY,
    checkpoint_step,
    compose_config,
    run_cli,
    run_dirs,
    tree_digest,
)

# Random draws during training (MixUp), so that restoring the generators is tested too.
EXACT = (*TINY, "trainer.max_epochs=2", "trainer.deterministic=true", "data.mixup_alpha=0.4")



@pytest.fixture(autouse=True)
def _fresh_plans():
    resume_module.clear_plans()
    yield
    resume_module.clear_plans()


# --------------------------------------------------------------------- the data position


# --------------------------------------------------------------------- exact continuation


def _keep_all(name: str, **trigger) -> list[str]:
    return [f"+callbacks.{name}._target_=lightning.pytorch.callbacks.ModelCheckpoint",
            f"+callbacks.{name}.dirpath=${{paths.output_dir}}/{name}", f"+callbacks.{name}.save_top_k=-1",
            f"+callbacks.{name}.filename={name[0]}\\{{step\\}}", f"+callbacks.{name}.auto_insert_metric_name=false",
            *(f"+callbacks.{name}.{key}={value}" for key, value in trigger.items())]


@pytest.mark.slow
def test_resuming_from_any_kind_of_checkpoint_ends_bit_identical(tmp_path):
    """Checkpoints written mid-epoch (after a training batch), after a validation, and at an
    epoch end without validation; each resumed run ends with the reference's exact weights."""
    common = [*EXACT, "logger=none", "test=false", "+callbacks.final._target_=tests.helpers.FinalState"]

    def run(name: str, *overrides: str) -> dict:
        directory = tmp_path / name
        train(compose_config([*common, f"+callbacks.final.path={directory}/final.pt", *overrides], run_dir=directory))
        return torch.load(directory / "final.pt", weights_only=True)

    reference = run("reference", *_keep_all("steps", every_n_train_steps=1), *_keep_all("epochs", every_n_epochs=1))
    checkpoints = {
        "mid_epoch_1": tmp_path / "reference" / "steps" / "s2.ckpt",
        "mid_epoch_2": tmp_path / "reference" / "steps" / "s6.ckpt",
        "after_validation": tmp_path / "reference" / "epochs" / "e4.ckpt",
    }
    no_validation = ("+trainer.limit_val_batches=0", "optimized_metric=train/loss")
    reference_no_val = run("reference_no_val", *no_validation, *_keep_all("epochs", every_n_epochs=1))
    for label, checkpoint in checkpoints.items():
        resumed = run(f"resumed_{label}", f"ckpt_path={checkpoint}")
        for key, value in reference["weights"].items():
            assert torch.equal(resumed["weights"][key], value), (label, key)
        assert resumed["metrics"] == reference["metrics"], label
    resumed = run("resumed_epoch_end", *no_validation, f"ckpt_path={tmp_path / 'reference_no_val' / 'epochs' / 'e4.ckpt'}")
    for key, value in reference_no_val["weights"].items():
        assert torch.equal(resumed["weights"][key], value), ("epoch end", key)


# --------------------------------------------------------------------- the real CLI


CLI = (*EXACT, "trainer.max_epochs=3", "callbacks=ema", "callbacks.ema.decay=0.9",
       "callbacks.last_checkpoint.every_n_train_steps=1")
# The CLI's config may name a test callback (tests.helpers), also when it resumes.
WITH_TESTS = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
FINAL_KEYS = ("test/acc_top1", "test/acc_top5", "test/loss", "test/acc_top1_ema", "val/acc_top1",
              "val/loss", "val/acc_top1_ema", "train/acc_top1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(CLI, root, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(root)
    return run


def _start(root: Path, *extra: str) -> subprocess.Popen:
    """The CLI in the background, its stdout and stderr in ``root/cli.log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", **WITH_TESTS}
    log = open(root / "cli.log", "w")  # a file, not a pipe: nobody reads while it trains
    return subprocess.Popen([sys.executable, "-m", "resnet_lab", *CLI, *extra], cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def _newest_checkpoint(run: Path) -> tuple[Path, int]:
    """What resume must choose: the checkpoint with the most steps, ``last.ckpt`` on a tie.
    A kill between the epoch's ``best.ckpt`` and ``last.ckpt`` leaves ``best.ckpt`` newer."""
    steps = {path: checkpoint_step(path) for path in (run / "checkpoints").glob("*.ckpt")}
    path = max(steps, key=lambda p: (steps[p], p.name == "last.ckpt"))
    return path, steps[path]


def _wait_for_checkpoint(root: Path, process: subprocess.Popen, step: int, timeout: float = 600) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        for run in run_dirs(root):
            last = run / "checkpoints" / "last.ckpt"
            try:
                if load_checkpoint_file(last, mmap=True)["global_step"] >= step:
                    return run
            except Exception:  # noqa: BLE001 - not written yet
                pass
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint at step {step} within {timeout} s")


def _logged(run: Path) -> dict[tuple[str, int], str]:
    """(metric, step) -> value from metrics.csv; for a step logged twice (the killed process
    logged it after its last checkpoint, the resumed one again) the later row wins."""
    values = {}
    for row in csv.DictReader(open(run / "csv" / "metrics.csv")):
        for key, value in row.items():
            if value and key not in ("epoch", "step", "train/images_per_sec"):  # speed: wall clock
                values[key, int(row["step"])] = value
    return values


def _assert_same_results(run: Path, reference: Path, resumed_step: int) -> None:
    record = json.loads((run / "run.json").read_text())
    expected = json.loads((reference / "run.json").read_text())
    assert record["status"] == "finished"
    for key in FINAL_KEYS:
        assert record["metrics"][key] == expected["metrics"][key], key
    assert record["best"] == expected["best"]
    logged, reference_logged = _logged(run), _logged(reference)
    # The row of the checkpoint's own batch is written just after the checkpoint; a kill in
    # between loses only that row (Lightning logs a batch after on_train_batch_end).
    missing = {key for key in reference_logged if key not in logged}
    assert missing <= {(k, s) for k, s in reference_logged if s == resumed_step - 1 and k.startswith("train/")}
    assert {k: v for k, v in logged.items() if k in reference_logged} == {
        k: v for k, v in reference_logged.items() if k in logged}
    assert set(logged) <= set(reference_logged)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_ends_like_the_uninterrupted_run(tmp_path, uninterrupted):
    step = random.Random().randint(1, 10)  # of 12; printed on failure
    process = _start(tmp_path)
    run = _wait_for_checkpoint(tmp_path, process, step)
    process.send_signal(signal.SIGKILL)
    process.wait()
    _resume_after_a_kill(tmp_path, run, uninterrupted, step)


@pytest.mark.slow
def test_a_kill_between_the_epochs_best_and_last_checkpoint_resumes_from_best(tmp_path, uninterrupted):
    """The end of epoch 1 (step 4) writes best.ckpt, then last.ckpt; killed in between,
    last.ckpt still holds step 3 and the run must go on from best.ckpt's step 4."""
    marker = tmp_path / "killed"
    process = _start(tmp_path, "+callbacks.kill._target_=tests.helpers.KillDuringSave", "+callbacks.kill.step=4",
                     "+callbacks.kill.save=2", f"+callbacks.kill.marker={marker}")
    assert process.wait(timeout=600) == -signal.SIGKILL, (tmp_path / "cli.log").read_text()[-3000:]
    (run,) = run_dirs(tmp_path)
    assert checkpoint_step(run / "checkpoints" / "best.ckpt") == 4
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 3
    _resume_after_a_kill(tmp_path, run, uninterrupted, "end of epoch 1")


def _resume_after_a_kill(root: Path, run: Path, uninterrupted: Path, when: object) -> None:
    newest, killed_at = _newest_checkpoint(run)
    hydra_files = {p.name: p.read_bytes() for p in (run / ".hydra").glob("*.yaml")}
    log_before = (run / "train.log").read_text()

    # Only resume=<run dir>: the run's own config (the TINY overrides) must be used.
    result = run_cli([f"resume={run}"], root, timeout=600, env=WITH_TESTS)
    assert result.returncode == 0, (when, killed_at, result.stderr[-3000:])
    assert f"resuming from {newest} (step {killed_at})" in result.stdout + result.stderr, (when, killed_at)
    assert run_dirs(root) == [run], "resuming must not create another run directory"
    _assert_same_results(run, uninterrupted, killed_at)
    assert {p.name: p.read_bytes() for p in (run / ".hydra").glob("*.yaml")} == hydra_files
    (resume_files,) = list((run / ".hydra" / "resumes").iterdir())
    assert "resume=" in (resume_files / "overrides.yaml").read_text()
    assert (run / "train.log").read_text().startswith(log_before)


@pytest.mark.slow
def test_sigterm_saves_exits_143_and_resume_auto_finishes_the_run(tmp_path, uninterrupted):
    process = _start(tmp_path)
    run = _wait_for_checkpoint(tmp_path, process, 5)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    output = (tmp_path / "cli.log").read_text()
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "received SIGTERM at step" in output and f"resume={run}" in output
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted"
    stopped_at = load_checkpoint_file(run / "checkpoints" / "last.ckpt", mmap=True)["global_step"]
    assert stopped_at >= 5 and f"at step {stopped_at}" in output

    # The same command plus resume=auto, as a requeued job would run it.
    result = run_cli([*CLI, "resume=auto"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert run_dirs(tmp_path) == [run]
    _assert_same_results(run, uninterrupted, stopped_at)


# --------------------------------------------------------------------- bad requests


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real run directory: trained by train(), with the .hydra files the CLI writes."""
    root = tmp_path_factory.mktemp("finished")
    run = root / "outputs" / "runs" / "2026-01-01_00-00-00_aaaaaa"
    cfg = compose_config([*TINY, "callbacks.last_checkpoint.every_n_train_steps=1"], run_dir=run)
    train(cfg)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text("\n".join(f"- {o}" for o in TINY) + "\n")
    return run


def _copy(run: Path, root: Path, name: str = "2026-01-02_00-00-00_bbbbbb", status: str = "interrupted") -> Path:
    copy = root / "outputs" / "runs" / name
    shutil.copytree(run, copy)
    record = json.loads((copy / "run.json").read_text())
    record.update(status=status, pid=None)
    (copy / "run.json").write_text(json.dumps(record))
    return copy


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def resolve_run_dir(overrides, cwd: Path, monkeypatch) -> str:
    """What `python -m resnet_lab OVERRIDES` run in ``cwd`` would use as its run directory."""
    monkeypatch.chdir(cwd)
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="test"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    return str(OmegaConf.select(cfg, "hydra.run.dir"))


def _refused(overrides, cwd: Path, monkeypatch, capsys) -> str:
    before = tree_digest(cwd)
    with pytest.raises(SystemExit) as stop:
        resolve_run_dir(overrides, cwd, monkeypatch)
    assert stop.value.code == 2
    assert tree_digest(cwd) == before, "a refused request changed files"
    message = capsys.readouterr().err
    assert message.startswith("error: ") and "Traceback" not in message
    return message


def test_resume_requests_that_cannot_work_are_refused_and_change_nothing(tmp_path, finished_run, monkeypatch, capsys):
    run = _copy(finished_run, tmp_path)
    last, best = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "best.ckpt"
    cases = {
        "no such path": ([f"resume={tmp_path / 'nope'}"], "no such run directory or checkpoint"),
        "not a run directory": ([f"resume={run / 'csv'}"], "not a run directory"),
        "not a checkpoint": ([f"resume={run / 'run.json'}"], "is not a PyTorch checkpoint"),
        "other config": ([*TINY, f"resume={run}", "optimizer.lr=0.5", "model=resnet32"],
                         "optimizer.lr: 0.1 -> 0.5"),
        "finished": ([f"resume={finished_run}"], "finished"),
        "both": ([f"resume={run}", f"ckpt_path={last}"], "exclude each other"),
        "missing ckpt_path": ([*TINY, f"ckpt_path={tmp_path / 'nope.ckpt'}"], "does not exist"),
        "architecture": ([*TINY, f"ckpt_path={last}", "model=resnet32"], "layer1.3.conv1.weight (16, 16, 3, 3)"),
        "weights only": ([*TINY, f"ckpt_path={_weights_file(tmp_path, last)}"], "not a training checkpoint"),
    }
    for label, (overrides, expected) in cases.items():
        message = _refused(overrides, tmp_path, monkeypatch, capsys)
        assert expected in message, (label, message)
    message = _refused([*TINY, f"resume={run}", "optimizer.lr=0.5", "model=resnet32"], tmp_path, monkeypatch, capsys)
    assert "model.name: 'resnet20' -> 'resnet32'" in message and "ckpt_path=<checkpoint>" in message

    _truncate(last)
    message = _refused([f"resume={last}"], tmp_path, monkeypatch, capsys)
    assert "is truncated or damaged" in message
    _truncate(best)
    message = _refused([f"resume={run}"], tmp_path, monkeypatch, capsys)
    assert "none can be read" in message and "last.ckpt" in message and "best.ckpt" in message


def _weights_file(directory: Path, checkpoint: Path) -> Path:
    path = directory / "weights.pth"
    torch.save(load_checkpoint_file(checkpoint)["state_dict"], path)
    return path


def test_a_malicious_checkpoint_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    from tests.helpers import Evil

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil(f"touch {marker}")}, evil)
    message = _refused([*TINY, f"ckpt_path={evil}"], tmp_path, monkeypatch, capsys)
    assert "refused" in message and "system" in message and "trust_checkpoint=true" in message
    assert not marker.exists()


def test_resume_auto_with_nothing_to_resume(tmp_path, finished_run, monkeypatch, capsys):
    message = _refused([*TINY, "resume=auto"], tmp_path, monkeypatch, capsys)
    assert "nothing to resume" in message and "resume=auto_or_new" in message
    shutil.copytree(finished_run, tmp_path / "outputs" / "runs" / finished_run.name)
    message = _refused([*TINY, "optimizer.lr=0.3", "resume=auto"], tmp_path, monkeypatch, capsys)
    assert "(1 other config)" in message and "optimizer.lr: 0.1 -> 0.3" in message
    # auto_or_new: says so and starts a new run.
    fresh = resolve_run_dir([*TINY, "resume=auto_or_new"], tmp_path, monkeypatch)
    assert Path(fresh).parent == tmp_path / "outputs" / "runs" and Path(fresh).name != finished_run.name
    (plan,) = resume_module.plan._PLANS.values()
    assert plan.run_dir is None and "nothing to resume" in plan.notes[0][1]


def test_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path, finished_run, monkeypatch):
    run = _copy(finished_run, tmp_path)
    _truncate(run / "checkpoints" / "last.ckpt")
    before = tree_digest(run)
    assert resolve_run_dir([f"resume={run}"], tmp_path, monkeypatch) == str(run)
    (plan,) = resume_module.plan._PLANS.values()
    assert plan.checkpoint == run / "checkpoints" / "best.ckpt" and plan.use_stored_config
    notes = " ".join(text for _, text in plan.notes)
    assert "passed over last.ckpt" in notes and "the newest checkpoint that can be read" in notes
    assert tree_digest(run) == before


def test_resume_auto_picks_the_latest_unfinished_run_with_this_config(tmp_path, finished_run, monkeypatch):
    _copy(finished_run, tmp_path, "2026-01-01_00-00-00_aaaaaa", status="finished")
    _copy(finished_run, tmp_path, "2026-01-02_00-00-00_bbbbbb")
    latest = _copy(finished_run, tmp_path, "2026-01-03_00-00-00_cccccc")
    record = json.loads((latest / "run.json").read_text())
    for run, updated in ((tmp_path / "outputs" / "runs" / "2026-01-02_00-00-00_bbbbbb", "2026-01-02T00:00:00+00:00"),
                         (latest, "2026-01-03T00:00:00+00:00")):
        record = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**record, "updated": updated}))
    # Another config, newer still: not a candidate.
    other = _copy(finished_run, tmp_path, "2026-01-04_00-00-00_dddddd")
    config = OmegaConf.load(other / ".hydra" / "config.yaml")
    config.optimizer.lr = 0.7
    OmegaConf.save(config, other / ".hydra" / "config.yaml")
    assert resolve_run_dir([*TINY, "resume=auto", "data.num_workers=0"], tmp_path, monkeypatch) == str(latest)


def test_a_run_whose_process_is_alive_is_not_resumed(tmp_path, finished_run, monkeypatch, capsys):
    run = _copy(finished_run, tmp_path)
    record = json.loads((run / "run.json").read_text())
    record.update(status="running", pid=os.getpid(), host=os.uname().nodename, command=" ".join(sys.argv))
    (run / "run.json").write_text(json.dumps(record))
    message = _refused([f"resume={run}"], tmp_path, monkeypatch, capsys)
    assert f"still running (pid {os.getpid()}" in message


def test_the_cli_refuses_a_changed_config_with_one_message(tmp_path, finished_run):
    run = _copy(finished_run, tmp_path)
    before = tree_digest(tmp_path)
    result = run_cli([f"resume={run}", "optimizer.lr=0.5"], tmp_path, timeout=300)
    assert result.returncode == 2
    assert "optimizer.lr: 0.1 -> 0.5" in result.stderr and "Traceback" not in result.stderr
    assert tree_digest(tmp_path) == before


# --------------------------------------------------------------------- the CSV log


def test_a_resumed_run_appends_to_its_metrics_csv(tmp_path):
    log_dir = tmp_path / "csv"
    log_dir.mkdir()
    (log_dir / "metrics.csv").write_text("epoch,step,train/loss\n0,0,2.5\n0,1,2.4\n")
    (log_dir / "hparams.yaml").write_text("lr: 0.1\n")
    writer = AppendingExperimentWriter(str(log_dir))
    writer.log_hparams({"lr": 0.1, "resume": "auto"})
    writer.log_metrics({"train/loss": 2.3, "epoch": 0}, step=2)
    writer.log_metrics({"val/acc_top1": 0.5, "epoch": 0}, step=3)  # a new column
    writer.save()
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    assert [row["step"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["train/loss"] for row in rows] == ["2.5", "2.4", "2.3", ""]
    assert rows[3]["val/acc_top1"] == "0.5"
    assert (log_dir / "hparams.yaml").read_text() == "lr: 0.1\n"
    assert sorted(p.name for p in log_dir.iterdir()) == ["hparams.yaml", "metrics.csv"]


@pytest.mark.slow
def test_ddp_run_stopped_by_sigterm_resumes_to_the_same_results(tmp_path):
    """Two processes (gloo): SIGTERM reaches only the launching process; both ranks stop at
    the same batch, and the resumed run ends with the uninterrupted run's numbers."""
    ddp = (*TINY, "trainer=ddp_cpu", "trainer.devices=2", "trainer.deterministic=true", "trainer.max_epochs=4",
           "callbacks.last_checkpoint.every_n_train_steps=1")
    reference_root, root = tmp_path / "reference", tmp_path / "stopped"
    reference_root.mkdir()
    root.mkdir()
    result = run_cli(ddp, reference_root, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}  # as run_cli: same kernels
    with open(root / "cli.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "resnet_lab", *ddp], cwd=root, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    run = _wait_for_checkpoint(root, process, 3, timeout=900)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 128 + signal.SIGTERM
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    result = run_cli([f"resume={run}"], root, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    (reference,) = run_dirs(reference_root)
    expected = json.loads((reference / "run.json").read_text())
    for key in ("test/acc_top1", "test/loss", "val/acc_top1", "val/loss"):
        assert record["metrics"][key] == expected["metrics"][key], key


KILL = (*TINY, "trainer.max_epochs=2", "trainer.deterministic=true", "seed=7", "optimizer.lr=0.1", "logger=none",
        "callbacks.last_checkpoint.every_n_train_steps=1", "+trainer.enable_progress_bar=false")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("hook", "epoch", "step"),
    [("train_batch_end", 0, 2), ("train_batch_end", 0, 4), ("validation_end", 0, -1),
     ("train_epoch_end", 0, -1), ("train_batch_end", 1, 6)],
    ids=["mid-epoch", "last batch", "right after validation", "epoch end", "second epoch"],
)
def test_a_kill_at_any_point_of_an_epoch_ends_like_the_uninterrupted_run(tmp_path, hook, epoch, step):
    """SIGKILL (no clean-up at all) at every kind of moment of an epoch, then resume: the best
    checkpoint, the best epoch and the test numbers are the uninterrupted run's (a last.ckpt
    with a stale "best so far" used to let the resumed run overwrite best.ckpt)."""
    reference = run_cli([*KILL, f"hydra.run.dir={tmp_path / 'reference'}"], tmp_path, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run = tmp_path / "killed"
    killer = ["+callbacks.kill._target_=tests.helpers.KillAt", f"+callbacks.kill.hook={hook}",
              f"+callbacks.kill.marker={tmp_path / 'killed-once'}",
              f"+callbacks.kill.epoch={epoch}", f"+callbacks.kill.step={step}"]
    killed = run_cli([*KILL, *killer, f"hydra.run.dir={run}"], tmp_path, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run_cli([f"resume={run}"], tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "reference" / "run.json").read_text())
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["best"] == expected["best"]
    for key in ("test/loss", "test/acc_top1", "val/loss", "val/acc_top1"):
        assert record["metrics"][key] == expected["metrics"][key], key
    best = load_checkpoint_file(run / "checkpoints" / "best.ckpt", mmap=True)
    reference_best = load_checkpoint_file(tmp_path / "reference" / "checkpoints" / "best.ckpt", mmap=True)
    assert (best["global_step"], best["epoch"]) == (reference_best["global_step"], reference_best["epoch"])
