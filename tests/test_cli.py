"""`python -m resnet_lab` as a user runs it: end to end, --cfg, --help, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from resnet_lab.models import build_model
from tests.helpers import TINY, run_cli, run_dirs


def test_fast_dev_run_writes_its_run_directory(tmp_path):
    result = run_cli([*TINY, "debug=fast_dev_run"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "train.log").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert "test/acc_top1" in record["metrics"]


def test_full_run_writes_checkpoints_metrics_and_summary(tmp_path):
    result = run_cli([*TINY, "trainer.max_epochs=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss", "train/acc_top1", "val/loss", "val/acc_top1", "val/acc_top5",
                "test/acc_top1", "train/lr", "train/images_per_sec"):
        assert key in header, key
    log = result.stdout + result.stderr
    assert "best val/acc_top1" in log and "test/acc_top1" in log and str(run) in log
    record = json.loads((run / "run.json").read_text())
    assert record["epochs_done"] == 2 and record["epochs_planned"] == 2
    # Our lines and real warnings only: no promotional tip, hardware banner or deprecations.
    for chatter in ("Tip:", "GPU available", "TPU available", "DeprecationWarning", "Restoring states"):
        assert chatter not in log, chatter


def test_two_runs_started_together_get_separate_directories(tmp_path):
    command = [sys.executable, "-m", "resnet_lab", *TINY, "debug=fast_dev_run"]
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    runs = run_dirs(tmp_path)
    assert len(runs) == 2
    assert all((run / "run.json").is_file() for run in runs)


_AGENT = """
import os, subprocess, sys
env = {**os.environ, "TORCHELASTIC_RUN_ID": "none", "MASTER_PORT": "29500",
       "WORLD_SIZE": sys.argv[1], "LOCAL_WORLD_SIZE": sys.argv[2], "TORCHELASTIC_RESTART_COUNT": sys.argv[3]}
worker = "from resnet_lab.run_names import run_id; print(run_id('run'))"
workers = [subprocess.Popen([sys.executable, "-c", worker], env=env, stdout=subprocess.PIPE, text=True)
           for _ in range(2)]
print(" ".join(w.communicate()[0].strip() for w in workers))
"""


def test_torchrun_workers_on_one_machine_share_one_run_directory():
    """torchrun starts every worker from its agent; each runs Hydra and names the run
    directory. A stand-in agent starts two workers the way torchrun does."""
    def ids(world: str, local: str, restart: str = "0") -> list[str]:
        result = subprocess.run([sys.executable, "-c", _AGENT, world, local, restart],
                                capture_output=True, text=True, timeout=120, check=True)
        return result.stdout.split()

    first, second = ids("2", "2"), ids("2", "2")
    assert first[0] == first[1] and second[0] == second[1]  # the workers of one agent agree
    assert first[0] != second[0]  # another torchrun: another run
    restarted = ids("2", "2", restart="1")
    assert restarted[0] == restarted[1] != first[0]
    # Several machines: no common parent, so no shared id (hydra.run.dir is required there).
    across = ids("4", "2")
    assert across[0] != across[1]


@pytest.mark.slow
def test_torchrun_on_one_machine_writes_one_run(tmp_path):
    env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "resnet_lab", "trainer=ddp_cpu", *TINY],
        cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (run,) = run_dirs(tmp_path)  # one directory for both processes
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_cli(["--cfg", "job", "model=resnet56", "optimizer.lr=0.05"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "name: resnet56" in result.stdout
    assert "lr: 0.05" in result.stdout
    assert not (tmp_path / "outputs" / "runs").exists()


def test_help_lists_groups_and_options(tmp_path):
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for group in ("model:", "data:", "optimizer:", "scheduler:", "trainer:", "logger:",
                  "callbacks:", "experiment:", "debug:"):
        assert group in result.stdout, group
    assert "resnet20" in result.stdout and "onecycle" in result.stdout


def _mismatching_weights(tmp_path):
    path = tmp_path / "resnet32_cifar100.pth"
    torch.save(build_model("resnet32", num_classes=100).state_dict(), path)
    return f"model.weights={path}"


def _unwritable(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    return f"paths.log_dir={blocker}/outputs"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=resnet_nonexistent", "Available options"),
        ("data.batch_size=0", "data.batch_size must be a positive integer"),
        ("data.batch_size=-8", "data.batch_size must be a positive integer"),
        ("optimizer.lr=-0.1", "optimizer.lr must be a positive finite number"),
        ("optimizer.lr=0", "optimizer.lr must be a positive finite number"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be a positive integer"),
        ("trainer.precision=17-mixed", "trainer.precision='17-mixed' is not a precision"),
        ("trainer.devices=3", "must divide evenly over 3 devices"),
        (_unwritable, "cannot write run outputs"),
        # Raised while Hydra instantiates the data module and the model: unwrapped, not
        # Hydra's InstantiationException with the message flattened.
        ("data.mixup_alpha=-0.2", "data.mixup_alpha is the Beta(alpha, alpha) parameter: a number >= 0"),
        ("+model.depht=32", "model.depht is not a model option. Options: block, layers"),
        (_mismatching_weights, "was trained with another architecture than the configured model"),
        # A recipe's key that the chosen option of its group does not take.
        (("experiment=degradation", "trainer=cpu", "scheduler=cosine"),
         "experiment=degradation sets scheduler.milestones (from experiment=cifar10_resnet56_paper, which it builds on) for the scheduler it was written for"),
    ],
)
def test_bad_input_is_one_clear_message(tmp_path, override, message):
    override = override(tmp_path) if callable(override) else override
    overrides = list(override) if isinstance(override, tuple) else [override]
    result = run_cli([*TINY, *overrides], tmp_path, timeout=120)
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    output = result.stdout + result.stderr
    assert message in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # Nothing started, so nothing is left behind (not even Hydra's empty run directory, nor
    # the sweep directory of a recipe that is a multirun: its first job stopped it).
    assert run_dirs(tmp_path) == []
    assert list((tmp_path / "outputs" / "multiruns").glob("*")) == []


def test_a_refused_job_stops_a_grid_multirun_and_keeps_the_jobs_before_it(tmp_path):
    result = run_cli(["-m", *TINY, "trainer.max_epochs=1", "optimizer.lr=0.1,nan,0.2"], tmp_path, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "optimizer.lr must be a positive finite number, got nan" in output
    assert "Traceback" not in output
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    # Job 0 finished and stays; job 1 was refused and left nothing; job 2 never started.
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"]
    assert json.loads((sweep / "0" / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("command", ["resnet_lab", "resnet_lab.evaluate", "resnet_lab.predict", "resnet_lab.export"])
def test_a_command_line_hydra_cannot_parse_exits_2_with_hydras_message(tmp_path, command):
    result = subprocess.run([sys.executable, "-m", command, "seed=["], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "no viable alternative at input '['" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "outputs").exists()
