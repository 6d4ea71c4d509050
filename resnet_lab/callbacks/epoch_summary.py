"""One log line per epoch with the epoch's metrics: readable in the terminal and in train.log."""

from __future__ import annotations

import logging

import lightning as L

log = logging.getLogger("resnet_lab")

_ORDER = ("train/loss", "train/acc_top1", "val/loss", "val/acc_top1", "val/acc_top5", "val/acc_top1_ema",
          "train/images_per_sec")


class EpochSummary(L.Callback):
    """Logs ``epoch N/M  train/loss ...  val/acc_top1 ...`` once an epoch's metrics are complete.

    Lightning validates inside the training epoch and aggregates the epoch's training
    metrics only after every ``on_train_epoch_end`` hook (the module's throughput included),
    so at validation end ``callback_metrics`` still holds the previous epoch's training
    values. The line is therefore written when the next epoch starts, or when training ends.
    """

    def __init__(self) -> None:
        self._pending: int | None = None  # the epoch whose line is due

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def _flush(self, trainer: L.Trainer) -> None:
        epoch, self._pending = self._pending, None
        if epoch is None or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [f"{key} {float(metrics[key]):.4g}" for key in _ORDER if key in metrics]
        planned = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        log.info("epoch %d/%s  %s", epoch + 1, planned, "  ".join(parts))
