"""Stop a run whose training loss stops being a finite number, and say why that happens.

Once the loss is NaN or infinite, the optimizer step that follows writes NaN into the
weights and every later step and checkpoint is worthless. ``DivergenceDetector`` raises a
``TrainingDivergedError`` naming the step, the learning rate and the precision, and makes
sure no checkpoint is written after the bad step: ``last.ckpt`` keeps the last good state.

Cost. On the CPU the check is a plain comparison each step. On an accelerator, reading the
loss back every step would stall the host until the device catches up, every step; instead
a device-side flag accumulates ``not isfinite(loss)`` (and the first bad step) with no
synchronization, and is read every ``check_every_n_steps`` steps (default: as often as
Lightning logs, which reads the loss then anyway), at the end of each epoch, and before
any checkpoint is written, so a bad step is never saved.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from resnet_lab.errors import ConfigError, UserError

log = logging.getLogger("resnet_lab")


class TrainingDivergedError(UserError):
    """The training loss became NaN or infinite."""


def _loss_of(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


class DivergenceDetector(L.Callback):
    """Raise ``TrainingDivergedError`` at the first non-finite training loss.

    Args:
        check_every_n_steps: on an accelerator, how often (optimizer steps) the device-side
            flag is read. Ignored on the CPU, where every step is checked.
        defer: accumulate on the device and read periodically (True) or read every step
            (False); None: defer unless the loss is on the CPU.
    """

    def __init__(self, check_every_n_steps: int = 50, defer: bool | None = None) -> None:
        if not isinstance(check_every_n_steps, int) or check_every_n_steps < 1:
            raise ConfigError(
                f"callbacks.divergence.check_every_n_steps must be a positive integer, got {check_every_n_steps!r}."
            )
        self.check_every_n_steps = check_every_n_steps
        self.defer = defer
        self._bad: torch.Tensor | None = None  # bool flag on the loss's device
        self._first: torch.Tensor | None = None  # (step, epoch, value) of the first bad loss
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = _loss_of(outputs)
        if loss is None:
            return
        loss = loss.detach().float()
        if not (self.defer if self.defer is not None else loss.device.type != "cpu"):
            if not bool(torch.isfinite(loss).all()):
                self._raise(trainer, trainer.global_step, trainer.current_epoch, float(loss.reshape(-1)[0]))
            return
        bad = ~torch.isfinite(loss).all()
        # torch.full launches a fill kernel; torch.tensor(value, device=...) would copy from
        # pageable host memory, which waits for the device queue: a sync every step.
        record = torch.stack([
            torch.full((), float(trainer.global_step), device=loss.device),
            torch.full((), float(trainer.current_epoch), device=loss.device),
            loss.reshape(-1)[0],
        ])
        if self._bad is None:
            self._bad = bad.clone()
            self._first = torch.where(bad, record, torch.full_like(record, -1.0))
        else:
            self._first = torch.where(bad & ~self._bad, record, self._first)
            self._bad |= bad
        if trainer.global_step % self.check_every_n_steps == 0:
            self.check(trainer)

    def check(self, trainer: L.Trainer | None = None) -> None:
        """Read the device-side flag (one synchronization) and raise if a loss was bad."""
        trainer = trainer or self._trainer
        if self._bad is None or trainer is None or not bool(self._bad):
            return
        step, epoch, value = (float(x) for x in self._first.tolist())
        self._raise(trainer, int(step), int(epoch), value)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called while a checkpoint is assembled, before it is written: raising here keeps a
        # diverged state out of last.ckpt.
        self.check(trainer)

    def _raise(self, trainer: L.Trainer, step: int, epoch: int, value: float) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else float("nan")
        precision = str(trainer.precision)
        clip = trainer.gradient_clip_val
        causes = [
            f"the learning rate is too high for this model and batch (it was {lr:.4g} at that "
            "step): lower optimizer.lr, or lengthen the warmup (scheduler.warmup_epochs)",
        ]
        if "16" in precision and "bf16" not in precision:
            causes.insert(0, (
                f"float16 overflow (trainer.precision={precision}; float16 ends at 65504): use "
                "trainer.precision=bf16-mixed on GPUs that have it (Ampere or newer), or 32-true"
            ))
        else:
            causes.append(f"numerics (trainer.precision={precision}): 32-true is the safest setting")
        if not clip:
            causes.append("exploding gradients: clip them, e.g. trainer.gradient_clip_val=1.0")
        last = _last_checkpoint(trainer)
        kept = (
            f"No checkpoint was written after it; {last} is the last good one."
            if last else "No checkpoint was written after it."
        )
        fix = (
            f" Resuming this run would repeat the same steps; start a new run from it instead: "
            f"ckpt_path={last} with the changed settings."
            if last else ""
        )
        listing = "\n".join(f"  - {cause}" for cause in causes)
        raise TrainingDivergedError(
            f"training diverged: the loss was {value} at step {step} (epoch {epoch + 1}). {kept}\n"
            f"Likely causes:\n{listing}\n{fix.strip()}".rstrip()
        )


def _last_checkpoint(trainer: L.Trainer) -> Path | None:
    from resnet_lab.callbacks.checkpoints import LastCheckpoint

    for callback in trainer.callbacks:
        if isinstance(callback, LastCheckpoint) and callback.path.is_file():
            return callback.path
    callback = trainer.checkpoint_callback
    for attribute in ("last_model_path", "best_model_path"):
        path = getattr(callback, attribute, "") if callback is not None else ""
        if path and Path(path).is_file():
            return Path(path)
    return None
