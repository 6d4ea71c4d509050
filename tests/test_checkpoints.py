"""Checkpoints: atomic writes, safe reads, clear errors, divergence and preemption stops.

The training tests run the real ``train(cfg)`` on the TINY config in-process; the crash
test kills a real writer process with SIGKILL while it saves.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from resnet_lab.callbacks import LastCheckpoint
from resnet_lab.callbacks.divergence import TrainingDivergedError
from resnet_lab.checkpoint_files import (
    check_state_dict_fits,
    load_checkpoint_file,
    require_training_state,
)
from resnet_lab.checkpoint_files import save_checkpoint_file as save_atomic
from resnet_lab.checkpoint_io import AtomicCheckpointIO
from resnet_lab.errors import CheckpointError
from resnet_lab.models import build_model
from resnet_lab.run_dir import remove_stale_temporaries
from resnet_lab.train import build_module, build_trainer, instantiate_group, train
from tests.helpers import REPO, TINY, Evil, compose_config

# 4 batches of 32 per epoch; a checkpoint after every optimizer step.
STEPS = (*TINY, "trainer.max_epochs=2", "logger=none", "test=false",
         "callbacks.last_checkpoint.every_n_train_steps=1")



def _step(path: Path) -> int:
    return int(load_checkpoint_file(path, mmap=True)["global_step"])


# ------------------------------------------------------------------------- atomic writes


def test_a_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    save_atomic({"global_step": 1, "w": torch.ones(3)}, target)
    real_save = torch.save

    def save_half_then_die(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_die)
    # A full disk is one sentence (a CheckpointError: the job exits 2 with it), not a traceback.
    with pytest.raises(CheckpointError, match="could not save checkpoint .*: disk full. The previous checkpoint there is intact"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint_file(target)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_temporary_file_is_next_to_the_target_and_synced(tmp_path, monkeypatch):
    """Same directory means same file system, so os.replace is an atomic rename."""
    renames, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), real_replace(src, dst)))
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, target)
    ((source, destination),) = renames
    assert destination == target and source.parent == target.parent and source != target
    assert len(synced) >= 1  # the file (and, where the platform allows, the directory)
    assert load_checkpoint_file(target)["global_step"] == 3


WRITER = textwrap.dedent("""
    import sys, torch
    from resnet_lab.checkpoint_io import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), sys.argv[1]
    step = 0
    while True:
        step += 1
        io.save_checkpoint({"global_step": step, "w": torch.full((3_000_000,), float(step))}, path)
        print(step, flush=True)
""")


def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    """A writer saving 12 MB checkpoints in a loop is killed at random moments; each time
    the file on disk is a complete checkpoint, and the next start removes the dead writer's
    temporary file."""
    target = tmp_path / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    rng = random.Random()
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=env,
                                  stdout=subprocess.PIPE, text=True)
        writer.stdout.readline()  # at least one save completed
        time.sleep(rng.uniform(0.0, 0.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        checkpoint = load_checkpoint_file(target)
        assert torch.all(checkpoint["w"] == float(checkpoint["global_step"]))
        remove_stale_temporaries(tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    mine = tmp_path / f".last.ckpt.{os.uname().nodename}.{os.getppid()}.tmp"
    mine.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == []
    assert mine.exists()


# ------------------------------------------------------------------------- safe reads


def test_a_malicious_pickle_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil(f"touch {marker}")}, evil)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_file(evil, what="ckpt_path")
    message = str(error.value)
    assert "system" in message and "trust_checkpoint=true" in message
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()
    # The explicit flag does what it says: full unpickling (here: the file's command runs).
    load_checkpoint_file(evil, trusted=True)
    assert marker.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.ckpt", "does not exist"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "not a PyTorch checkpoint"),
        (lambda d: _truncated(d), "is truncated or damaged"),
    ],
    ids=["missing", "directory", "text file", "truncated"],
)
def test_unreadable_files_give_one_clear_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint_file(path, what="ckpt_path")
    assert str(path) in str(error.value)


def _truncated(directory: Path) -> Path:
    path = directory / "last.ckpt"
    torch.save({"global_step": 1, "w": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_weights_file_cannot_continue_training(tmp_path):
    with pytest.raises(CheckpointError, match="not a training checkpoint.*optimizer_states.*model.weights"):
        require_training_state({"state_dict": {}}, "ckpt_path 'w.pth'")


def test_another_architecture_lists_names_and_shapes():
    resnet20 = build_model("resnet20", num_classes=10).state_dict()
    resnet32 = build_model("resnet32", num_classes=100).state_dict()
    with pytest.raises(CheckpointError) as error:
        check_state_dict_fits(resnet20, resnet32, "ckpt_path 'x.ckpt'")
    message = str(error.value)
    assert "in the checkpoint, not in the model" in message
    assert "layer1.3.conv1.weight (16, 16, 3, 3)" in message  # resnet32 has 5 blocks per stage
    assert "fc.weight (100, 64) vs (10, 64)" in message
    check_state_dict_fits(resnet20, build_model("resnet20", num_classes=10).state_dict(), "same")


# ------------------------------------------------------------------------- divergence


class PoisonWeightsAt(L.Callback):
    """Makes the loss NaN from optimizer step ``step`` on (a weight becomes NaN)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.net.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize("deferred", [False, True], ids=["checked every step", "device flag read at save"])
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, deferred):
    run = tmp_path / "run"
    cfg = compose_config([
        *STEPS, "+callbacks.poison._target_=tests.test_checkpoints.PoisonWeightsAt", "+callbacks.poison.step=5",
        # deferred: the flag is read only every 100 steps or when a checkpoint is about to be
        # written (what happens on a GPU); a checkpoint follows every step here.
        f"+callbacks.divergence.defer={deferred}", "callbacks.divergence.check_every_n_steps=100",
    ], run_dir=run)
    with pytest.raises(TrainingDivergedError) as error:
        train(cfg)
    message = str(error.value)
    assert "the loss was nan at step 6 (epoch 2)" in message
    assert "learning rate" in message and "trainer.precision=32-true" in message
    assert "gradient_clip_val" in message
    last = run / "checkpoints" / "last.ckpt"
    assert f"{last} is the last good one" in message
    checkpoint = load_checkpoint_file(last)
    assert checkpoint["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["exception"].startswith("TrainingDivergedError")


def test_the_deferred_check_copies_nothing_from_the_host_per_step(monkeypatch):
    """On a GPU, torch.tensor(value, device=cuda) copies from pageable host memory and so
    waits for the device queue; the deferred check must build its per-step record without
    it (its only read-back is every check_every_n_steps)."""
    from types import SimpleNamespace

    from resnet_lab.callbacks.divergence import DivergenceDetector

    detector = DivergenceDetector(check_every_n_steps=1000, defer=True)
    trainer = SimpleNamespace(global_step=3, current_epoch=1)
    real_tensor = torch.tensor

    def no_host_copies(*args, **kwargs):
        raise AssertionError("torch.tensor called in the per-step check")

    monkeypatch.setattr(torch, "tensor", no_host_copies)
    detector.on_train_batch_end(trainer, None, {"loss": torch.full((), 2.0)}, None, 0)
    trainer.global_step = 4
    detector.on_train_batch_end(trainer, None, {"loss": torch.full((), float("nan"))}, None, 1)
    monkeypatch.setattr(torch, "tensor", real_tensor)
    assert bool(detector._bad) and detector._first.tolist() == [4.0, 1.0, pytest.approx(float("nan"), nan_ok=True)]


def test_float16_divergence_suggests_bf16():
    from resnet_lab.callbacks.divergence import DivergenceDetector

    class FakeTrainer:
        optimizers = []
        precision = "16-mixed"
        gradient_clip_val = None
        callbacks = []
        checkpoint_callback = None

    with pytest.raises(TrainingDivergedError, match="float16 overflow.*bf16-mixed"):
        DivergenceDetector()._raise(FakeTrainer(), 10, 0, float("inf"))


@pytest.mark.parametrize("last_first", [True, False], ids=["last_checkpoint first", "model_checkpoint first"])
def test_last_ckpt_holds_the_best_score_of_its_own_validation(tmp_path, last_first):
    """Whatever the callback order, last.ckpt written at validation end carries the best
    checkpoint's decision on that very validation (a stale "best so far" let a resumed run
    overwrite best.ckpt with a worse epoch)."""
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "logger=none", "test=false"], run_dir=run)
    callbacks = instantiate_group(cfg.callbacks)
    callbacks.sort(key=lambda c: isinstance(c, LastCheckpoint) != last_first)
    trainer = build_trainer(cfg, callbacks, [])
    trainer.fit(build_module(cfg, instantiate(cfg.model)), datamodule=instantiate(cfg.data))
    checkpoint = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["best_model_score"] is not None
    assert float(state["best_model_score"]) == float(trainer.callback_metrics["val/acc_top1"])


def test_a_tie_keeps_the_earlier_epoch_in_best_ckpt_and_in_run_json(tmp_path):
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "trainer.max_epochs=3", "logger=none", "test=false", "optimized_metric=val/tied",
                          "+callbacks.tie._target_=tests.helpers.LogConstant", "+callbacks.tie.name=val/tied",
                          "+callbacks.tie.value=0.5"], run_dir=run)
    train(cfg)
    record = json.loads((run / "run.json").read_text())
    assert record["best"] == {"val/tied": 0.5, "epoch": 0}
    assert load_checkpoint_file(run / "checkpoints" / "best.ckpt")["epoch"] == 0


# ------------------------------------------------------------------------- preemption


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
