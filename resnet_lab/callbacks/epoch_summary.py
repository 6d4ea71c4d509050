"""One log line per epoch with the epoch's metrics: readable in the terminal and in train.log."""

from __future__ import annotations

import logging

import lightning as L

log = logging.getLogger("resnet_lab")

_ORDER = ("train/loss", "train/acc_top1", "val/loss", "val/acc_top1", "val/acc_top5", "train/images_per_sec")


class EpochSummary(L.Callback):
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [f"{key} {float(metrics[key]):.4g}" for key in _ORDER if key in metrics]
        planned = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        log.info("epoch %d/%s  %s", trainer.current_epoch + 1, planned, "  ".join(parts))
