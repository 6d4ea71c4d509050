"""The contract every resnet_lab data module keeps.

A data module knows nothing of models. It exposes what a model config needs by
interpolation (``num_classes``, ``in_chans``, ``image_size``, ``classes``) and takes the
*global* batch size: each device gets ``batch_size / world_size`` images per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from resnet_lab.errors import ConfigError


def per_device_batch_size(global_batch_size: int, world_size: int) -> int:
    """Split a global batch over ``world_size`` devices, refusing a split that is not exact."""
    if global_batch_size <= 0:
        raise ConfigError(
            f"data.batch_size must be a positive integer, got {global_batch_size}."
        )
    if global_batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={global_batch_size} is the global batch and must divide evenly "
            f"over {world_size} devices (trainer.devices x trainer.num_nodes); choose a "
            f"multiple of {world_size}, e.g. {global_batch_size // world_size * world_size or world_size}."
        )
    return global_batch_size // world_size


class ImageDataModule(L.LightningDataModule):
    """Base class: holds the dataset description and builds the three loaders.

    Subclasses set ``self.train_set``, ``self.val_set`` and ``self.test_set`` in ``setup``
    and may override ``train_transform_batch`` to augment whole batches after they reach the
    device (the fast path for data sets that fit in memory).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        classes: Sequence[str] | None = None,
        seed: int = 0,
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
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}.")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def world_size(self) -> int:
        trainer = self.trainer
        return trainer.world_size if trainer is not None else 1

    @property
    def rank(self) -> int:
        trainer = self.trainer
        return trainer.global_rank if trainer is not None else 0

    def _sampler(self, dataset: Dataset, *, train: bool) -> Sampler:
        """Samplers that make the data order a pure function of (seed, epoch, rank).

        Training uses a ``DistributedSampler`` even on one device: its order depends only on
        ``seed`` and the epoch Lightning passes to ``set_epoch``, so a resumed run can find
        its place in the epoch. Evaluation shards without padding, so that metrics under DDP
        cover exactly the evaluation set (``DistributedSampler`` would repeat samples to even
        out the shards). Lightning keeps both: it only replaces non-distributed samplers.
        """
        if train:
            return DistributedSampler(
                dataset,
                num_replicas=self.world_size,
                rank=self.rank,
                shuffle=True,
                seed=self.seed,
                drop_last=True,
            )
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=False
        )

    def _loader(self, dataset: Dataset | None, *, train: bool, stage: str) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create the {stage} set")
        global_batch = self.batch_size if train else self.eval_batch_size
        return DataLoader(
            dataset,
            batch_size=per_device_batch_size(global_batch, self.world_size),
            sampler=self._sampler(dataset, train=train),
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True, stage="training")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False, stage="validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False, stage="test")
