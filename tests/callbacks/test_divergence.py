"""resnet_lab.callbacks.divergence: a NaN loss stops the run naming the step; nothing is
saved after it; no host copy per step on an accelerator."""

from __future__ import annotations

import json

import pytest
import torch

from resnet_lab.callbacks.divergence import TrainingDivergedError
from resnet_lab.checkpoint_files import (
    load_checkpoint_file,
)
from resnet_lab.train import train
from tests.helpers import TINY, compose_config

# 4 batches of 32 per epoch; a checkpoint after every optimizer step.
STEPS = (*TINY, "trainer.max_epochs=2", "logger=none", "test=false",
         "callbacks.last_checkpoint.every_n_train_steps=1")







@pytest.mark.parametrize("deferred", [False, True], ids=["checked every step", "device flag read at save"])
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, deferred):
    run = tmp_path / "run"
    cfg = compose_config([
        *STEPS, "+callbacks.poison._target_=tests.helpers.PoisonWeightsAt", "+callbacks.poison.step=5",
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
