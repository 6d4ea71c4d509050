"""Synthetic images of any shape and class count, for tests and benchmarks.

Each class has its own fixed pattern plus noise, so a network can learn the task: tests
can check that training lowers the loss and raises accuracy, which random labels cannot show.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from resnet_lab.data.base import ImageDataModule
from resnet_lab.data.preprocessing import EvalPreprocessing
from resnet_lab.errors import ConfigError


def make_synthetic(
    n: int, *, num_classes: int, in_chans: int, image_size: int, noise: float, seed: int
) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    # The class patterns come from a seed of their own so that every split shares them.
    patterns = torch.randn(
        num_classes, in_chans, image_size, image_size, generator=torch.Generator().manual_seed(0)
    )
    labels = torch.randint(num_classes, (n,), generator=generator)
    images = patterns[labels] + noise * torch.randn(
        n, in_chans, image_size, image_size, generator=generator
    )
    return TensorDataset(images, labels)


class SyntheticDataModule(ImageDataModule):
    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        image_size: int = 32,
        train_size: int = 512,
        val_size: int = 128,
        test_size: int = 128,
        noise: float = 1.0,
        seed: int = 0,
        **loader_options,
    ) -> None:
        super().__init__(
            num_classes=num_classes, in_chans=in_chans, image_size=image_size, **loader_options
        )
        for name, size in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if size <= 0:
                raise ConfigError(f"data.{name} must be a positive integer, got {size}.")
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.noise = noise
        self.seed = seed

    def build_sets(self) -> None:
        shape = dict(num_classes=self.num_classes, in_chans=self.in_chans, image_size=self.image_size)
        self.train_set, self.val_set, self.test_set = (
            make_synthetic(self.sizes[split], **shape, noise=self.noise, seed=self.seed + offset)
            for offset, split in enumerate(("train", "val", "test"), start=1)
        )

    def eval_preprocessing(self) -> EvalPreprocessing:
        """Its samples are not images; an image file is scaled to [-1, 1], where the bulk of
        the standard-normal patterns lies, so that the inference path can be exercised."""
        return EvalPreprocessing.square(self.in_chans, self.image_size, (0.5,) * self.in_chans, (0.5,) * self.in_chans)
