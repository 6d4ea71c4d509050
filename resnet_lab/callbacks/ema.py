"""An exponential moving average (EMA) of the weights, evaluated next to the trained weights.

Lightning's ``EMAWeightAveraging`` keeps the average (``torch.optim.swa_utils.AveragedModel``,
BatchNorm statistics included) and decides when to update it, counting optimizer steps, so
gradient accumulation is respected; ``EMA`` reuses all of that. Lightning's callback
*replaces* the weights with the average: it validates only the average, puts it in the
checkpoint's ``state_dict`` and copies it into the model when training ends. Here the average
is a second model beside the trained one, as in timm's ``ModelEmaV3``:

* validation and test report both: ``val/acc_top1`` (trained weights) and
  ``val/acc_top1_ema`` (the average), the same for ``loss`` and ``acc_top5`` and for ``test/``;
* checkpoints keep the trained weights in ``state_dict`` (what ``ckpt_path``, resuming and
  the checkpoint monitor refer to) and the average in ``ema_state_dict``, with the same keys,
  so ``module.load_state_dict(checkpoint["ema_state_dict"])`` gives the EMA model;
* the model keeps its trained weights at the end of training.

To select checkpoints by the EMA's accuracy, set ``optimized_metric=val/acc_top1_ema`` (the
checkpoint monitor follows it).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric, MetricCollection

from resnet_lab.errors import ConfigError

log = logging.getLogger("resnet_lab")

EMA_STATE_KEY = "ema_state_dict"
_N_AVERAGED_KEY = "ema_n_averaged"
SUFFIX = "_ema"


class _EvalMetrics:
    """The module's metrics for one stage, renamed ``<stage>/<name>_ema``, plus the loss."""

    def __init__(self, module_metrics: MetricCollection, stage: str) -> None:
        self.stage = stage
        self.metrics = module_metrics.clone(postfix=SUFFIX)
        self.metrics.reset()
        self.loss = MeanMetric()

    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        self.metrics.to(logits.device)
        self.loss.to(logits.device)
        self.metrics.update(logits, targets)
        self.loss.update(loss, weight=targets.shape[0])

    def compute_and_reset(self) -> dict[str, torch.Tensor]:
        # torchmetrics syncs the states of all ranks in compute(): the values cover the whole
        # (unpadded) evaluation set.
        values = {**self.metrics.compute(), f"{self.stage}/loss{SUFFIX}": self.loss.compute()}
        self.metrics.reset()
        self.loss.reset()
        return values


class EMA(EMAWeightAveraging):
    """EMA of the weights of an ``ImageClassifier``, validated and tested beside them.

    Args:
        decay: weight of the old average per update; the average spans about
            ``1 / (1 - decay)`` updates (0.999: the last ~1,000 steps).
        update_every_n_steps: update after every n-th optimizer step.
        update_starting_at_step: first optimizer step (zero-based) that updates the average
            (None: the first); the first update copies the weights.
        device: where the average lives (default: the model's device; "cpu" saves GPU memory
            at the cost of a copy every update).
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        device: str | None = None,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(
                f"callbacks.ema.decay must be between 0 and 1 (exclusive), got {decay}. "
                "Typical: 0.999 for runs of thousands of steps, 0.9999 for ImageNet."
            )
        if update_every_n_steps < 1:
            raise ConfigError(
                f"callbacks.ema.update_every_n_steps must be a positive integer, got "
                f"{update_every_n_steps}. Example: callbacks.ema.update_every_n_steps=1."
            )
        super().__init__(
            device=device,
            use_buffers=True,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
        )
        self.decay = decay
        # False while the average holds nothing worth evaluating: in a test of a checkpoint
        # saved without an EMA.
        self._ready = False
        self._eval: dict[str, _EvalMetrics] = {}

    # --- the average ------------------------------------------------------------------

    def _create_average(self, pl_module: L.LightningModule) -> None:
        # Built before configure_model() compiles the network (deep copies of compiled
        # modules are not supported), unlike Lightning's setup(), which calls configure_model
        # first and warns about it.
        self._average_model = AveragedModel(
            model=pl_module, device=self._device, use_buffers=self._use_buffers, **self._kwargs
        )
        self._average_model.requires_grad_(False)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._average_model is None:
            self._create_average(pl_module)
            self._ready = stage == "fit"
        elif stage == "fit":
            self._ready = True
        self._eval = {
            "val": _EvalMetrics(pl_module.val_metrics, "val"),
            "test": _EvalMetrics(pl_module.test_metrics, "test"),
        }

    def _to_model_device(self, pl_module: L.LightningModule) -> None:
        # At setup() the model is still on the CPU; the strategy moves it afterwards.
        if self._average_model is None:
            return
        if self._device is None:
            self._average_model.to(pl_module.device)
        if getattr(pl_module, "channels_last", False):
            self._average_model.module.to(memory_format=torch.channels_last)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._to_model_device(pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._to_model_device(pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._to_model_device(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep the trained weights in the model (Lightning's callback copies the average in)."""

    # --- evaluation beside the trained weights -------------------------------------------

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Do not swap the average in (Lightning's callback validates only the average)."""

    def _evaluate_batch(self, trainer: L.Trainer, stage: str, batch: Any) -> None:
        if not self._ready or self._average_model is None or trainer.sanity_checking:
            return
        images, targets = batch
        if not len(images):  # every image of the batch failed to decode
            return
        average = self._average_model.module
        average.eval()
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            logits = average(images)
            loss = average._loss(logits, targets)
        self._eval[stage].update(logits, targets, loss)

    def _log_stage(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self._ready or trainer.sanity_checking:
            return
        values = self._eval[stage].compute_and_reset()
        # Already synced across ranks by compute(); sync_dist only averages equal numbers
        # (and keeps Lightning from warning about unsynced epoch-level values).
        pl_module.log_dict(values, sync_dist=True, prog_bar=stage == "val")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._evaluate_batch(trainer, "val", batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._evaluate_batch(trainer, "test", batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_stage(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_stage(trainer, pl_module, "test")

    # --- checkpoints ---------------------------------------------------------------------

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None or not self._ready:
            return
        prefix = "module."
        state = self._average_model.state_dict()
        checkpoint[EMA_STATE_KEY] = {
            key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)
        }
        checkpoint[_N_AVERAGED_KEY] = int(self._average_model.n_averaged)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            self._create_average(pl_module)
        if EMA_STATE_KEY in checkpoint:
            self._average_model.module.load_state_dict(checkpoint[EMA_STATE_KEY])
            self._average_model.n_averaged.fill_(checkpoint.get(_N_AVERAGED_KEY, 1))
            self._ready = True
        elif trainer.state.fn == "fit":
            # Resuming from a checkpoint saved without an EMA: the average starts afresh
            # from the restored weights at the next update.
            self._average_model.n_averaged.zero_()
            self._ready = True
        else:
            self._ready = False
            if trainer.is_global_zero:
                log.info("the checkpoint holds no EMA weights: no %s metrics", SUFFIX)
