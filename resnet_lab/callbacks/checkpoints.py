"""``last.ckpt``, and the order in which checkpoints of one moment are decided.

``LastCheckpoint`` writes ``<dirpath>/last.ckpt``, the newest training state that ``resume``
continues from, after every validation (or at the end of an epoch without one) and, with
``every_n_train_steps=N``, every N optimizer steps. Lightning 2.6's ``ModelCheckpoint``
with ``save_last=True`` writes ``last.ckpt`` only when it also saved a top-k checkpoint, so
its ``last.ckpt`` can be many epochs old; this callback always writes it.

A checkpoint carries every callback's state, the best checkpoint's "best so far" included.
``ModelCheckpoint`` decides on an epoch's validation at the end of the training epoch when
validation runs once an epoch (its ``save_on_train_epoch_end`` default), otherwise at
validation end, and Lightning calls checkpoint callbacks in the order they were given. A
``last.ckpt`` written before that decision would carry a stale best score, and a resumed run
would then replace ``best.ckpt`` with a worse epoch. So the validation that ends an epoch is
followed by ``last.ckpt`` at the end of the training epoch, and every save first lets each
``ModelCheckpoint`` decide (``settle_best_checkpoints``: its hooks are idempotent within one
step), so whatever the callback order each checkpoint of a moment holds the same state.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from resnet_lab.errors import ConfigError
from resnet_lab.run_dir import LAST_CHECKPOINT


def settle_best_checkpoints(trainer: L.Trainer, pl_module: L.LightningModule, hook: str) -> None:
    """Run ``hook`` (``on_validation_end`` or ``on_train_epoch_end``) of every
    ``ModelCheckpoint`` now, so that its best score includes this moment's metrics."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            getattr(callback, hook)(trainer, pl_module)


class LastCheckpoint(Checkpoint):
    """See the module docstring.

    The step trigger skips the last batch of an epoch: a checkpoint written there resumes
    past that epoch's validation (Lightning counts the epoch as done and does not run it),
    and the after-validation checkpoint follows a moment later anyway.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None,
                 filename: str = LAST_CHECKPOINT) -> None:
        if every_n_train_steps is not None and (not isinstance(every_n_train_steps, int) or every_n_train_steps < 1):
            raise ConfigError(
                f"callbacks.last_checkpoint.every_n_train_steps must be a positive integer or null "
                f"(off), got {every_n_train_steps!r}."
            )
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.every_n_train_steps = every_n_train_steps
        self._saved_step: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or self._saved_step == trainer.global_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0 and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch's own validation: saved at the end of the training epoch
        settle_best_checkpoints(trainer, pl_module, "on_validation_end")
        self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        settle_best_checkpoints(trainer, pl_module, "on_validation_end")
        settle_best_checkpoints(trainer, pl_module, "on_train_epoch_end")
        self._save(trainer)
