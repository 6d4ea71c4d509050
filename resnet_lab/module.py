"""``ImageClassifier``: the LightningModule that glues a network to the training loop.

It takes a built ``nn.Module`` and ``_partial_`` optimizer and scheduler factories; it owns
the loss, the metrics and the optimizer's parameter groups, and nothing about data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from resnet_lab.errors import CheckpointError, ConfigError
from resnet_lab.models import rebuild_network

OptimizerFactory = Callable[..., Optimizer]
# Called as scheduler(optimizer, total_steps=..., steps_per_epoch=...); see resnet_lab.schedulers.
SchedulerFactory = Callable[..., LRScheduler]


def param_groups(
    net: nn.Module, weight_decay: float, decay_norm_and_bias: bool, *, head_lr: float | None = None
) -> list[dict]:
    """Split the trainable parameters into decayed and non-decayed groups.

    Norm weights and biases (every parameter with at most one dimension) get no weight
    decay unless asked: decaying them shrinks the scale BN learns and costs accuracy
    (Goyal et al. 2017, "Accurate, Large Minibatch SGD", section 5.1; timm does the same).
    ``head_lr``: the classifier's parameters (``net.get_classifier()``) go to groups of their
    own with this learning rate (fine-tuning a pretrained body more gently than a new head).
    """
    head = {id(p) for p in net.get_classifier().parameters()} if head_lr is not None else set()
    groups: dict[tuple[bool, bool], list] = {(False, True): [], (False, False): []}
    for parameter in net.parameters():
        if parameter.requires_grad:
            decayed = decay_norm_and_bias or parameter.ndim > 1
            groups.setdefault((id(parameter) in head, decayed), []).append(parameter)
    if decay_norm_and_bias:
        groups.pop((False, False))
    result = []
    for (is_head, decayed), parameters in groups.items():
        group = {"params": parameters, "weight_decay": weight_decay if decayed else 0.0}
        if is_head:
            group["lr"] = head_lr
        result.append(group)
    return result


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """Class indices of training targets (MixUp/CutMix targets are per-class probabilities)."""
    return targets.argmax(dim=1) if targets.ndim == 2 else targets


def _accuracy_metrics(num_classes: int) -> MetricCollection:
    # validate_args=False: the check runs torch.unique on the targets, a host-device
    # synchronization per metric per step on a GPU; cross_entropy rejects bad labels anyway.
    options = {"average": "micro", "validate_args": False}
    metrics = {"acc_top1": MulticlassAccuracy(num_classes, top_k=1, **options)}
    if num_classes >= 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, **options)
    return MetricCollection(metrics)


def check_class_weights(weights, num_classes: int) -> str | list[float] | None:
    if weights is None or weights == "balanced":
        return weights
    if isinstance(weights, str) or not isinstance(weights, Sequence) or len(weights) != num_classes or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < math.inf for w in weights
    ):
        raise ConfigError(
            f"module.class_weights must be balanced, null or a list of {num_classes} weights >= 0 "
            f"(one per class); got {weights!r}."
        )
    return [float(w) for w in weights]


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """``N / (C x N_c)`` per class: each class weighs as much in the loss as any other."""
    counts = torch.as_tensor(counts, dtype=torch.float32)
    if not bool((counts > 0).all()):
        empty = [i for i, n in enumerate(counts.tolist()) if n == 0]
        raise ConfigError(
            f"module.class_weights=balanced: class {empty[0]} has no training images, so it has no "
            "inverse frequency. Add images of it or set module.class_weights=null."
        )
    return counts.sum() / (len(counts) * counts)


class ImageClassifier(L.LightningModule):
    """Trains ``net`` for image classification with cross-entropy.

    Args:
        net: maps images (N, C, H, W) to logits (N, num_classes). None: built from
            ``architecture`` (as ``load_from_checkpoint`` does).
        optimizer: a factory ``optimizer(params) -> Optimizer`` (a Hydra ``_partial_``).
            Its ``weight_decay`` keyword, if any, is applied per parameter group. None for
            inference only.
        scheduler: a factory ``scheduler(optimizer, total_steps=, steps_per_epoch=)``, or
            None for a constant learning rate. Stepped every optimizer step.
        num_classes: number of classes (from the data module).
        label_smoothing: cross-entropy label smoothing (0 = off).
        class_weights: per-class weights of the training loss: None, a list of
            ``num_classes`` weights, or ``"balanced"``: ``N / (num_classes x N_c)`` from the data
            module's ``class_counts()`` (inverse frequency, as scikit-learn's "balanced").
            Validation and test losses stay unweighted.
        decay_norm_and_bias: also apply weight decay to norm weights and biases.
        head_lr_multiplier: the classifier's learning rate is this times the optimizer's (and
            scheduled with it): more than 1 when fine-tuning a pretrained network.
        channels_last: run the network in NHWC memory format (faster on tensor cores).
        compile: compile the network with ``torch.compile`` (state-dict names unchanged).
        architecture: the arguments that rebuild ``net`` (``ResNet.architecture``); taken
            from ``net`` when it has them. Saved with the other hyperparameters, so
            ``ImageClassifier.load_from_checkpoint(path)`` needs no other argument.
        classes, preprocessing: the class names and the evaluation preprocessing
            (``EvalPreprocessing.to_dict()``); None: taken from the trainer's data module
            when training starts. Saved, so that a checkpoint classifies new images alone.
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        *,
        num_classes: int,
        label_smoothing: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        decay_norm_and_bias: bool = False,
        head_lr_multiplier: float = 1.0,
        channels_last: bool = False,
        compile: bool = False,
        architecture: dict | None = None,
        classes: Sequence[str] | None = None,
        preprocessing: dict | None = None,
    ) -> None:
        super().__init__()
        if net is None:
            if architecture is None:
                raise CheckpointError(
                    "ImageClassifier needs a network: this checkpoint predates saved architectures. "
                    "Pass one, ImageClassifier.load_from_checkpoint(path, net=build_model(...)), or use "
                    "resnet_lab.load(<run directory>), which rebuilds it from the run's config."
                )
            net = rebuild_network(architecture)
        if not isinstance(head_lr_multiplier, (int, float)) or isinstance(head_lr_multiplier, bool) or not head_lr_multiplier > 0:
            raise ConfigError(f"module.head_lr_multiplier must be a number > 0 (1: the body's rate), got {head_lr_multiplier!r}.")
        if head_lr_multiplier != 1 and not callable(getattr(net, "get_classifier", None)):
            raise ConfigError("module.head_lr_multiplier needs a network with get_classifier() (resnet_lab's ResNet has it).")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if architecture is None and getattr(net, "architecture", None) is not None:
            self.hparams["architecture"] = dict(net.architecture)
        self.head_lr_multiplier = float(head_lr_multiplier)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.class_weights = check_class_weights(class_weights, num_classes)
        # Not saved: "balanced" is recomputed from the data, and a checkpoint loads the same
        # whatever the weights were.
        weights = None if self.class_weights in (None, "balanced") else torch.tensor(self.class_weights)
        self.register_buffer("loss_weights", weights, persistent=False)
        self.decay_norm_and_bias = decay_norm_and_bias
        self.channels_last = channels_last
        self.compile = compile
        self.train_metrics = _accuracy_metrics(num_classes).clone(prefix="train/")
        # Their running counts go into checkpoints, so an epoch resumed part-way reports its
        # training accuracy over the whole epoch, not only the part after the resume.
        self.train_metrics.persistent(True)
        self.val_metrics = _accuracy_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = _accuracy_metrics(num_classes).clone(prefix="test/")
        # Losses averaged as metrics, not with self.log(sync_dist=True): under DDP the
        # evaluation shards are unpadded and may differ in length by one batch, and a
        # metric syncs once at epoch end instead of once per step.
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self._epoch_start: float | None = None
        self._epoch_images = 0
        self._last_batch_end = 0.0

    def configure_model(self) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile and not getattr(self, "_compiled", False):
            # nn.Module.compile compiles in place, so state-dict names stay those of `net`
            # (torch.compile(net) would prefix every key with `_orig_mod.`).
            self.net.compile()
            self._compiled = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "classes", None) is not None and stage == "fit":
            # What a checkpoint needs to classify new images on its own (resnet_lab.load).
            self.hparams["classes"] = [str(name) for name in datamodule.classes]
            describe = getattr(datamodule, "eval_preprocessing", None)
            self.hparams["preprocessing"] = describe().to_dict() if describe is not None else None
        if self.class_weights == "balanced" and stage == "fit":
            counts = getattr(self.trainer.datamodule, "class_counts", None)
            if counts is None:
                raise ConfigError("module.class_weights=balanced needs a data module with class_counts(); "
                                  "resnet_lab's data modules have it.")
            self.loss_weights = balanced_class_weights(counts()).to(self.device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of ``logits`` against class indices or, after MixUp/CutMix,
        per-class probabilities (N, num_classes); ``weight``: per-class weights."""
        return F.cross_entropy(logits.float(), targets, weight=weight, label_smoothing=self.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        images, targets = batch
        if not len(images):
            # No image of this batch decoded (the data module dropped them all): no step.
            # Under DDP every rank must reduce gradients, so this one contributes zeros.
            return self(images).sum() if self.trainer.world_size > 1 else None
        logits = self(images)
        loss = self.loss(logits, targets, self.loss_weights)
        self.train_metrics.update(logits.detach(), hard_labels(targets))
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        # As a float, Lightning would make it torch.tensor(lr, device=...): a blocking copy that
        # waits for the GPU every step (pytorch#120996). torch.full fills on the device.
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", torch.full((), lr, device=self.device))
        return loss

    def _eval_step(self, batch, metrics: MetricCollection, loss_metric: MeanMetric, stage: str) -> None:
        images, targets = batch
        if not len(images):  # every image of the batch failed to decode
            return
        logits = self(images)
        loss_metric.update(self.loss(logits, targets), weight=images.shape[0])
        metrics.update(logits, hard_labels(targets))
        self.log(f"{stage}/loss", loss_metric, prog_bar=stage == "val")
        self.log_dict(metrics, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, self.val_loss, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, self.test_loss, "test")

    def on_train_epoch_start(self) -> None:
        # Lightning resets logged metrics at the end of an epoch, but not the end of an epoch
        # that a resumed run only finished (its checkpoint held the counts): start clean.
        self.train_metrics.reset()
        self._epoch_images = 0
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._epoch_images += batch[0].shape[0]
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        # Training images per second over the epoch (validation excluded), this process's
        # share times the world size. Measured per epoch, not per step: a per-step rate
        # needs a device synchronization every step, which itself slows a GPU down.
        if self._epoch_start is not None and self._epoch_images:
            elapsed = self._last_batch_end - self._epoch_start
            rate = self._epoch_images * self.trainer.world_size / max(elapsed, 1e-9)
            self.log("train/images_per_sec", rate, rank_zero_only=True)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ConfigError(
                "this ImageClassifier has no optimizer (load_from_checkpoint builds it without one, for inference): "
                "pass optimizer=functools.partial(torch.optim.SGD, lr=...) to train it."
            )
        defaults = getattr(self.optimizer_factory, "keywords", {})
        weight_decay = defaults.get("weight_decay", 0.0)
        head_lr = None
        if self.head_lr_multiplier != 1:
            if "lr" not in defaults:
                raise ConfigError("module.head_lr_multiplier needs the optimizer's lr as a keyword (optimizer.lr).")
            head_lr = defaults["lr"] * self.head_lr_multiplier
        optimizer = self.optimizer_factory(
            param_groups(self.net, weight_decay, self.decay_norm_and_bias, head_lr=head_lr)
        )
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        steps_per_epoch = max(1.0, total_steps / max_epochs)
        options = {}
        if self.trainer.fast_dev_run and "warmup_epochs" in getattr(self.scheduler_factory, "keywords", {}):
            options["warmup_epochs"] = 0  # a run of one step cannot warm up; it only checks the pipeline
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch, **options
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
