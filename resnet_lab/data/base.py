"""The contract every resnet_lab data module keeps.

A data module knows nothing of models. It exposes what a model config needs by
interpolation (``num_classes``, ``in_chans``, ``image_size``, ``classes``) and takes the
*global* batch size: each device gets ``batch_size / world_size`` images per step.

Batches are ``(images, labels)``: float32 NCHW normalized images and int64 class indices, or,
while MixUp or CutMix is on, training targets of shape ``(N, num_classes)`` that sum to one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from resnet_lab.data.mixing import BatchMixer
from resnet_lab.data.order import (
    BalancedDistributedSampler,
    DeferredStartDataLoader,
    ResumableDistributedSampler,
)
from resnet_lab.data.preprocessing import EvalPreprocessing
from resnet_lab.errors import ConfigError

log = logging.getLogger(__name__)

# The label a data set returns for a sample it could not read (see ImageFileDataset); such
# samples are dropped from the batch in on_after_batch_transfer.
UNREADABLE = -1


def per_device_batch_size(global_batch_size: int, world_size: int, *, key: str = "data.batch_size") -> int:
    """Split a global batch over ``world_size`` devices, refusing a split that is not exact.

    key: the config key that holds ``global_batch_size``, for the message.
    """
    if global_batch_size <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {global_batch_size}.")
    if global_batch_size % world_size:
        raise ConfigError(
            f"{key}={global_batch_size} is the global batch and must divide evenly "
            f"over {world_size} devices (trainer.devices x trainer.num_nodes); choose a "
            f"multiple of {world_size}, e.g. {key}={global_batch_size // world_size * world_size or world_size}."
        )
    return global_batch_size // world_size


def require_shape(source: str, given: tuple[int, int, int], expected: tuple[int, int, int]) -> None:
    """A data set of fixed shape refuses other ``(num_classes, in_chans, image_size)``."""
    if tuple(given) != tuple(expected):
        classes, chans, size = expected
        raise ConfigError(
            f"{source} has {classes} classes of {chans}x{size}x{size} images; got num_classes={given[0]}, "
            f"in_chans={given[1]}, image_size={given[2]}. Remove those overrides."
        )


class ImageDataModule(L.LightningDataModule):
    """Base class: holds the dataset description and builds the three loaders.

    Subclasses set ``self.train_set``, ``self.val_set`` and ``self.test_set`` in
    ``build_sets``, which ``setup`` calls once, and may override ``train_transform_batch`` to augment whole training batches after they
    reach the device. MixUp / CutMix (``mixup_alpha``, ``cutmix_alpha``, ``mix_prob``,
    ``cutmix_prob``; see ``BatchMixer``) run after it, on every data set. ``balanced_sampler``
    draws the training classes equally often (``BalancedDistributedSampler``).
    """

    # Data sets that may meet an unreadable file mid-epoch set this; their batches are then
    # checked for UNREADABLE labels (a device sync per batch, so only where it can happen).
    may_skip_samples = False

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | str = 0,
        pin_memory: bool = False,
        classes: Sequence[str] | None = None,
        seed: int = 0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        cutmix_prob: float = 0.5,
        balanced_sampler: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_classes", num_classes),
            ("in_chans", in_chans),
            ("image_size", image_size),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}.")
        if eval_batch_size is not None and (not isinstance(eval_batch_size, int) or eval_batch_size <= 0):
            raise ConfigError(f"data.eval_batch_size must be a positive integer or null, got {eval_batch_size!r}.")
        if num_workers != "auto" and (not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0):
            raise ConfigError(f"data.num_workers must be an integer >= 0 or auto (the cores per training process), got {num_workers!r}.")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        self.mixer = BatchMixer(
            num_classes,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=mix_prob,
            cutmix_prob=cutmix_prob,
        )
        if not isinstance(balanced_sampler, bool):
            raise ConfigError(f"data.balanced_sampler must be true or false, got {balanced_sampler!r}.")
        self.balanced_sampler = balanced_sampler
        self.skipped_samples = 0
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def world_size(self) -> int:
        if self.trainer is not None:
            return self.trainer.world_size
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        if self.trainer is not None:
            return self.trainer.global_rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @property
    def device(self) -> torch.device:
        """The device this process trains on (CPU without a trainer)."""
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def build_sets(self) -> None:
        """Create ``train_set``, ``val_set`` and ``test_set``, checking the data on the way."""
        raise NotImplementedError

    def eval_preprocessing(self) -> EvalPreprocessing:
        """What evaluation does to an image file before the network sees it (resize, centre
        crop, normalization): checkpoints carry it, so that predict, export and
        ``resnet_lab.load`` treat a new image as this data module treats its test images."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.build_sets()
        if stage in (None, "fit"):
            self.check_batch_sizes()

    def per_device_batch(self, *, train: bool) -> int:
        if train:
            return per_device_batch_size(self.batch_size, self.world_size)
        return per_device_batch_size(self.eval_batch_size, self.world_size, key="data.eval_batch_size")

    def train_labels(self) -> torch.Tensor:
        """The class index of every training sample, in the training set's order."""
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run")
        labels = getattr(self.train_set, "labels", None)
        if labels is None and isinstance(self.train_set, TensorDataset):
            labels = self.train_set.tensors[1]
        return torch.as_tensor(labels, dtype=torch.long)

    def class_counts(self) -> list[int]:
        """Training images per class (for class weights and the balanced sampler)."""
        return torch.bincount(self.train_labels(), minlength=self.num_classes).tolist()

    def check_batch_sizes(self) -> None:
        """Both batch sizes divide over the devices, and training has at least one batch.

        Each device trains on ``len(train_set) // world_size`` images (the training sampler
        drops the remainder) in batches of ``batch_size / world_size``, the last incomplete
        batch dropped: a batch bigger than that shard would give epochs with no step.
        """
        per_device = self.per_device_batch(train=True)
        self.per_device_batch(train=False)
        images = len(self.train_set)
        shard = images // self.world_size
        if per_device > shard:
            devices = (
                f" ({shard} per device on {self.world_size} devices, {per_device} per device per batch)"
                if self.world_size > 1 else ""
            )
            largest = shard * self.world_size
            example = self.world_size * 2 ** max(0, shard.bit_length() - 1)
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the training set: {images} images"
                f"{devices}, so an epoch would have no complete batch to train on. Choose "
                f"data.batch_size <= {largest}, e.g. data.batch_size={example}."
            )

    def _sampler(self, dataset: Sequence | Dataset, *, train: bool) -> Sampler:
        """Samplers that make the data order a pure function of (seed, epoch, rank).

        Training uses a ``DistributedSampler`` even on one device: its order depends only on
        ``seed`` and the epoch Lightning passes to ``set_epoch``, so a resumed run can find
        its place in the epoch. Evaluation shards without padding, so that metrics under DDP
        cover exactly the evaluation set (``DistributedSampler`` would repeat samples to even
        out the shards). Lightning keeps both: it only replaces non-distributed samplers.
        The training sampler is resnet_lab.data.order's subclass, which skips the batches a
        resumed epoch already trained on (given the trainer, it reads where Lightning resumes).
        """
        if train:
            sampler, extra = ResumableDistributedSampler, {}
            if self.balanced_sampler:
                counts = torch.tensor(self.class_counts(), dtype=torch.double)
                sampler, extra = BalancedDistributedSampler, {"weights": (1.0 / counts.clamp(min=1))[self.train_labels()]}
            return self.training_sampler(sampler)(
                dataset,
                num_replicas=self.world_size,
                rank=self.rank,
                shuffle=True,
                seed=self.seed,
                drop_last=True,
                trainer=self.trainer,
                **extra,
            )
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=False
        )

    def training_sampler(self, sampler_class: type):
        """The class (or factory) that builds the training sampler ``_sampler`` chose; data
        modules whose datasets take more than an index refine it."""
        return sampler_class

    def _loader(self, dataset: Dataset | None, *, train: bool, stage: str) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create the {stage} set")
        # Training loaders start their workers at the first batch (see DeferredStartDataLoader)
        # and draw the workers' base seed from a generator of their own: from torch's global
        # one, a resumed run would take one number more than the run it continues (MixUp and
        # the random_state callback draw from it).
        extra = {"generator": torch.Generator().manual_seed(self.seed)} if train else {}
        loader = DeferredStartDataLoader if train else DataLoader
        return loader(
            dataset,
            **extra,
            batch_size=self.per_device_batch(train=train),
            sampler=self._sampler(dataset, train=train),
            drop_last=train,
            num_workers=self.workers,
            # Pinned memory speeds up copies to an accelerator; on the CPU it only warns.
            pin_memory=self.pin_memory and self.device.type != "cpu",
            persistent_workers=self.workers > 0,
            collate_fn=self.collate_fn(dataset),
        )

    @property
    def workers(self) -> int:
        """``num_workers``, with ``auto`` resolved: this machine's cores (those this process may
        run on) shared among its training processes."""
        if self.num_workers != "auto":
            return self.num_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        local_processes = self.trainer.num_devices if self.trainer is not None else 1
        return max(1, cores // max(1, local_processes))

    def collate_fn(self, dataset: Dataset):
        """How the loader of ``dataset`` makes batches; None: PyTorch's default collation."""
        return None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True, stage="training")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False, stage="validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False, stage="test")

    def train_transform_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a training batch on the device; identity unless a data module overrides it."""
        return images

    def drop_unreadable(self, images: torch.Tensor, labels: torch.Tensor):
        """Remove samples whose file could not be decoded; count them and say so in the log."""
        readable = labels != UNREADABLE
        if bool(readable.all()):
            return images, labels
        skipped = int((~readable).sum())
        self.skipped_samples += skipped
        log.warning(
            "skipped %d unreadable image(s) in this batch, %d in this run so far (the file names "
            "are in the warnings above)",
            skipped,
            self.skipped_samples,
        )
        return images[readable], labels[readable]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if self.may_skip_samples:
            images, labels = self.drop_unreadable(images, labels)
            if not len(labels):  # nothing decoded: the module skips the batch
                return images, labels
        if self.trainer is not None and self.trainer.training:
            images = self.train_transform_batch(images)
            images, labels = self.mixer(images, labels)
        return images, labels
