"""The jpeg section's lever rows (``--jpeg-levers``): our loader with one lever changed at a time.

* ``ours, fast DCT``: libjpeg-turbo's fast IDCT and upsampling (``data.fast_dct``);
* ``ours, float in workers``: our crops converted and normalized in the workers, so float32
  batches travel between processes (the uint8 lever, undone);
* ``torchvision tensors``: ``data.pipeline=torchvision``, the data modules' reference path
  (torchvision's decoder, then ``v2`` transforms on uint8 tensors, float32 batches).

Each row's difference from ``ours`` is what its lever is worth on the machine that ran it.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2


class FloatInWorkers(Dataset):
    """A fast-path dataset whose samples leave the worker as normalized float32."""

    def __init__(self, inner: Dataset, mean, std) -> None:
        self.inner = inner
        self.finish = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key):
        image, label = self.inner[key]
        return self.finish(image), label


def lever_loaders(paths, labels, plan, *, seed: int, mean, std, common: dict) -> dict[str, DataLoader]:
    from resnet_lab.data.fast_images import EpochSeededSampler, FastImageDataset, FileSource
    from resnet_lab.data.image_files import ImageFileDataset
    from resnet_lab.data.image_transforms import ImageFileTransforms

    def seeded(dataset: Dataset) -> DataLoader:
        sampler = EpochSeededSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=True)
        return DataLoader(dataset, sampler=sampler, **common)

    fast = FastImageDataset(FileSource(paths, labels), dataclasses.replace(plan, fast_dct=True), train=True, seed=seed)
    accurate = FastImageDataset(FileSource(paths, labels), plan, train=True, seed=seed)
    transforms = ImageFileTransforms(image_size=plan.image_size, mean=mean, std=std)
    reference = ImageFileDataset(paths, labels, transforms.train(), plan.image_size)
    return {
        "ours, fast DCT": seeded(fast),
        "ours, float in workers": seeded(FloatInWorkers(accurate, mean, std)),
        "torchvision tensors": DataLoader(reference, shuffle=True, **common),
    }
