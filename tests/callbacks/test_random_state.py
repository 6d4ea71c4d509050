"""resnet_lab.callbacks.random_state: the global generators travel in checkpoints."""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from resnet_lab.callbacks import RandomState


def _draws() -> tuple:
    return torch.rand(3).tolist(), float(np.random.rand()), random.random()


def test_the_next_random_draws_after_a_restore_are_those_after_the_save():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    _draws()
    saved = RandomState().state_dict()
    expected = _draws()
    # Through a checkpoint file, read as resume reads it (weights_only).
    buffer = io.BytesIO()
    torch.save({"random_state": saved}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["random_state"]
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restorer = RandomState()
    restorer.load_state_dict(loaded)
    restorer.on_train_start(None, None)  # a checkpoint written inside an epoch restores here
    assert _draws() == expected
