"""Random number generator states in checkpoints, so that a resumed run draws what the
uninterrupted run would have drawn.

Lightning checkpoints hold the model, optimizer, schedulers, loops and callback states but
not the global generators of torch, CUDA, NumPy and Python. Whatever uses them after a resume
(MixUp/CutMix, augmentation on the device, dropout, drop-path) would draw from the freshly
seeded generators instead, and a resumed run would drift from the uninterrupted one.

The states are stored as plain tensors, ints and tuples, so checkpoints still load with
``torch.load(weights_only=True)`` (a NumPy state holds an ``ndarray``, which it refuses).
Under DDP each process has its own generators; all are gathered to rank 0, which writes the
checkpoint, and each process restores its own.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def collect_rng_states() -> dict[str, Any]:
    """This process's global generator states, as types ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": (int(version), tuple(int(x) for x in python_state), gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = states["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            log.warning(
                "the checkpoint holds CUDA generator states for %d devices, this machine has %d; "
                "CUDA random numbers will differ from the uninterrupted run",
                len(cuda_states), torch.cuda.device_count(),
            )


class RandomState(L.Callback):
    """Saves every process's generator states in checkpoints and restores them on resume.

    When to restore matters by one number: building a ``DataLoader`` iterator draws one
    value from torch's generator (its workers' base seed), and a resumed fit builds one
    before the first batch. A checkpoint written inside an epoch was written after that
    epoch's iterator was built, so the states are restored after the resumed fit builds
    its own (``on_train_start``). A checkpoint written once an epoch's training was over
    precedes the next epoch's iterator, which the resumed fit reuses from its start-up
    (``is_resuming``), so the states are restored at once, before it is built.
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        states = collect_rng_states()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, states)
        else:
            gathered = [states]
        return {"per_rank": gathered, "before_next_epoch": self._epoch_training_over()}

    def _epoch_training_over(self) -> bool:
        if self._trainer is None:
            return False
        epochs = self._trainer.fit_loop.epoch_progress.current
        batches = self._trainer.fit_loop.epoch_loop.batch_progress
        inside_last_batch_end = batches.is_last_batch and batches.current.completed == batches.current.processed - 1
        return epochs.processed == epochs.started or inside_last_batch_end

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("per_rank")
        if state_dict.get("before_next_epoch"):
            self._restore()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def _restore(self) -> None:
        if not self._pending:
            return
        states, self._pending = self._pending, None
        trainer = self._trainer
        world_size = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if len(states) != world_size:
            log.warning(
                "the checkpoint was written by %d processes, this run has %d: the random "
                "generators keep their fresh seeds, so random draws differ from the original run",
                len(states), world_size,
            )
            return
        set_rng_states(states[rank])
