"""The device-resident loader: the whole uint8 data set on the training device, no workers.

After airbench: a data set as small as CIFAR (150 MB as uint8) sits on the GPU once, and a
batch is an index into it plus a few batched ops (crop, flip, normalize), so the GPU never
waits for CPU workers.

The order of the samples is a ``DistributedSampler``'s (the same as the DataLoader path's):
a function of (seed, epoch, rank), each rank a disjoint shard, reshuffled each epoch when
Lightning calls ``sampler.set_epoch``. The augmentation of batch ``b`` draws from a generator
seeded with (seed, epoch, rank, b), so a run is reproducible, and a run resumed after k batches
of an epoch (the sampler skips them, ``resnet_lab.data.order``) sees the same remaining
batches, augmentation included.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from resnet_lab.data.augment import Normalize, SmallImageAugment


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """A well-mixed 63-bit seed for one batch (NumPy's SeedSequence hashing)."""
    entropy = [value & 0xFFFF_FFFF_FFFF_FFFF for value in (seed, epoch, rank, batch)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


class DeviceResidentLoader:
    """Iterates ``(images, labels)`` batches of uint8 ``images`` already on their device.

    images: uint8 (N, C, H, W) on the device that trains. labels: int64 (N,) on the same device.
    sampler: a ``DistributedSampler`` (training) or ``UnrepeatedDistributedSampler``
        (evaluation) over ``range(N)``; Lightning finds it as ``loader.sampler`` and calls its
        ``set_epoch``.
    augment: the training augmentation, or None for evaluation (normalize only).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        sampler: DistributedSampler,
        batch_size: int,
        drop_last: bool,
        normalize: Normalize,
        augment: SmallImageAugment | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError("images must be uint8 (N, C, H, W) with one label each")
        self.images = images
        self.labels = labels
        self.sampler = sampler
        # Lightning reads batch_sampler wherever it finds a sampler (_is_dataloader_shuffled).
        self.batch_sampler = None
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.normalize = normalize
        self.augment = augment

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        """Batches in the epoch. In a resumed epoch Lightning counts from the restored batch
        up to this (as it does for a DataLoader over the same sampler), so it stays the whole
        epoch's length while the iterator yields only the remaining batches."""
        return self._batches(len(self.sampler))

    def _batches(self, samples: int) -> int:
        return samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # One Python list of at most N indices per epoch (a few ms for 50,000); no per-sample work.
        # A resumed epoch's sampler leaves out the batches already trained on (start_index
        # indices); the batches that remain keep their numbers, and so their augmentation.
        order = torch.as_tensor(list(self.sampler), dtype=torch.long, device=self.device)
        first = getattr(self.sampler, "start_index", 0) // self.batch_size
        generator = torch.Generator(device=self.device) if self.augment is not None else None
        seed, epoch, rank = self.sampler.seed, self.sampler.epoch, self.sampler.rank
        for position in range(self._batches(len(order))):
            index = order[position * self.batch_size : (position + 1) * self.batch_size]
            images = self.images.index_select(0, index)
            if generator is None:
                images = self.normalize(images)
            else:
                generator.manual_seed(batch_seed(seed, epoch, rank, first + position))
                images = self.augment.apply_batch(images, self.normalize, generator=generator)
            yield images, self.labels.index_select(0, index)
