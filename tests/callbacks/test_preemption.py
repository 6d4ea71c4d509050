"""resnet_lab.callbacks.preemption: SIGTERM/SIGUSR1 (and submitit's signal) save at a
clean point and exit 128 + signal; SLURM requeue."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest

from resnet_lab.train import train
from tests.helpers import TINY, compose_config
from tests.helpers import checkpoint_step as _step

# 4 batches of 32 per epoch; a checkpoint after every optimizer step.
STEPS = (*TINY, "trainer.max_epochs=2", "logger=none", "test=false",
         "callbacks.last_checkpoint.every_n_train_steps=1")







def _train_until_signalled(run: Path, step: int, signum: str = "SIGTERM", epochs: int = 1) -> int:
    """Train TINY in-process, sending ``signum`` to itself at step ``step``; the exit status."""
    cfg = compose_config([*TINY, f"trainer.max_epochs={epochs}", "logger=none", "test=false",
                          "+callbacks.signal._target_=tests.helpers.SignalAt",
                          f"+callbacks.signal.step={step}", f"+callbacks.signal.signum={signum}"], run_dir=run)
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    return stop.value.code


@pytest.mark.parametrize(("step", "saved_step"), [(1, 2), (3, 4)], ids=["mid-epoch", "last batch of the epoch"])
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, step, saved_step):
    """Mid-epoch the batch in progress finishes, then last.ckpt is written; on an epoch's
    last batch the stop waits for that epoch's validation (and its checkpoint)."""
    run = tmp_path / "run"
    previous = signal.getsignal(signal.SIGTERM)
    assert _train_until_signalled(run, step, epochs=2) == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored after fit
    assert _step(run / "checkpoints" / "last.ckpt") == saved_step
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert record["epochs_done"] == (1 if step == 3 else 0)


@pytest.mark.parametrize("moment", ["batch", "validation"], ids=["on the last batch", "during validation"])
def test_a_stop_at_the_end_of_an_epoch_keeps_that_epochs_training_metrics(tmp_path, moment):
    """The stop waits until Lightning has logged the epoch's training metrics: they are in
    metrics.csv and run.json, and the resumed run (which starts with the next epoch) never
    logs them, so they would be lost for good."""
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "trainer.max_epochs=2", "test=false", "+callbacks.signal._target_=tests.helpers.SignalAt",
                          f"+callbacks.signal.hook={moment}", "+callbacks.signal.step=3"], run_dir=run)
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    assert stop.value.code == 128 + signal.SIGTERM
    assert _step(run / "checkpoints" / "last.ckpt") == 4
    record = json.loads((run / "run.json").read_text())
    assert (record["status"], record["epochs_done"]) == ("interrupted", 1)
    assert "train/acc_top1" in record["metrics"]
    with open(run / "csv" / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/acc_top1")]
    assert [int(row["epoch"]) for row in rows] == [0]


def test_sigusr1_under_slurm_requeues_the_job(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    run = tmp_path / "run"
    assert _train_until_signalled(run, 1, "SIGUSR1") == 128 + signal.SIGUSR1
    assert calls.read_text().split() == ["requeue", "4242"]
    assert _step(run / "checkpoints" / "last.ckpt") == 2
    assert json.loads((run / "run.json").read_text())["slurm_job_id"] == "4242"


def test_submitits_signal_saves_first_then_submitit_requeues(tmp_path, monkeypatch):
    """hydra/launcher=slurm: submitit sends SIGUSR2 before the time limit, and its own handler
    would requeue and exit mid-step with nothing saved. The run saves at the end of the batch,
    then hands the signal to submitit's handler (which requeues and exits)."""
    run = tmp_path / "run"
    seen = []

    def submitits_handler(signum, frame):  # what submitit's checkpoint_and_try_requeue does
        seen.append((signum, _step(run / "checkpoints" / "last.ckpt")))
        raise SystemExit(-1)

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    previous = signal.signal(signal.SIGUSR2, submitits_handler)
    try:
        assert _train_until_signalled(run, 1, "SIGUSR2") == 128 + signal.SIGUSR2
        assert seen == [(signal.SIGUSR2, 2)]  # called once, after last.ckpt held step 2
        assert signal.getsignal(signal.SIGUSR2) is submitits_handler  # given back after fit
        assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    finally:
        signal.signal(signal.SIGUSR2, previous)
