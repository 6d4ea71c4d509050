"""Data sets held whole in memory as uint8 tensors (CIFAR, Fashion-MNIST), with two loader paths.

* device-resident (``device_resident: true``): the uint8 tensors move to the training device
  once and ``DeviceResidentLoader`` cuts augmented batches from them with batched tensor ops;
* DataLoader (``device_resident: false``): a torchvision ``v2`` pipeline per image in worker
  processes, then the usual host-to-device copy.

Both read the same ``SmallImageAugment`` and the same sampler, so they give the same samples
in the same order with the same augmentation distribution. ``auto`` picks the device-resident
path when training on an accelerator and the augmentation can run batched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from resnet_lab.data.augment import Normalize, SmallImageAugment
from resnet_lab.data.base import ImageDataModule
from resnet_lab.data.device_loader import DeviceResidentLoader
from resnet_lab.data.preprocessing import EvalPreprocessing
from resnet_lab.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


class UInt8ImageDataset(Dataset):
    """Images of one uint8 (N, C, H, W) tensor, each through ``transform``, with int labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), int(self.labels[index])


def carve_validation(
    images: torch.Tensor, labels: torch.Tensor, val_size: int, split_seed: int, *, source: str
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split off ``val_size`` training images, chosen by a permutation seeded with ``split_seed``.

    The split does not depend on the run's seed, so runs with different seeds validate on the
    same images; both parts keep the original file order.
    """
    if not 0 <= val_size < len(labels):
        raise ConfigError(
            f"data.val_size={val_size} must lie in [0, {len(labels) - 1}]: it is carved out of "
            f"the {len(labels)} training images of {source}."
        )
    permutation = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    val_index = permutation[:val_size].sort().values
    train_index = permutation[val_size:].sort().values
    return (images[train_index], labels[train_index]), (images[val_index], labels[val_index])


def _parse_device_resident(value) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value
    raise ConfigError(f"data.device_resident must be true, false or auto; got {value!r}.")


class InMemoryImageDataModule(ImageDataModule):
    """Base of data modules whose splits are small uint8 tensors; see the module docstring.

    Subclasses implement ``load_split(train)`` returning uint8 (N, C, H, W) images and int64
    labels, and ``source`` naming where they come from (for messages).
    """

    def __init__(
        self,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        val_size: int = 5000,
        split_seed: int = 0,
        device_resident: bool | str = "auto",
        pad: int = 4,
        flip: bool = True,
        padding_mode: str = "constant",
        cutout: int = 0,
        random_erasing: float = 0.0,
        auto_augment: str | None = None,
        auto_augment_dataset: str = "cifar10",
        **common,
    ) -> None:
        super().__init__(**common)
        if not isinstance(val_size, int) or val_size < 0:
            raise ConfigError(f"data.val_size must be an integer >= 0 (0: no validation set), got {val_size!r}.")
        self.normalize = Normalize(mean, std)
        if len(self.normalize.mean) != self.in_chans:
            raise ConfigError(f"data.mean and data.std need {self.in_chans} values, one per channel.")
        self.augment = SmallImageAugment(
            pad=pad,
            flip=flip,
            padding_mode=padding_mode,
            cutout=cutout,
            random_erasing=random_erasing,
            auto_augment=auto_augment,
            auto_augment_dataset=auto_augment_dataset,
        )
        self.device_resident = _parse_device_resident(device_resident)
        if self.device_resident is True and not self.augment.batchable:
            raise ConfigError(
                f"data.auto_augment={auto_augment} runs per image and cannot run on the device-resident "
                "path; set data.device_resident=false or auto (auto uses the DataLoader path for it)."
            )
        self.val_size = val_size
        self.split_seed = split_seed
        self.arrays: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def source(self) -> str:
        """Where the data comes from, for messages."""
        raise NotImplementedError

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, C, H, W) images and int64 (N,) labels of the training or the test set."""
        raise NotImplementedError

    def build_sets(self) -> None:
        train_images, train_labels = self.load_split(train=True)
        test_images, test_labels = self.load_split(train=False)
        shape = (self.in_chans, self.image_size, self.image_size)
        for images in (train_images, test_images):
            if images.dtype != torch.uint8 or tuple(images.shape[1:]) != shape:
                raise DataError(
                    f"{self.source} holds {tuple(images.shape[1:])} {images.dtype} images, not "
                    f"uint8 {shape}; check data.root, data.in_chans and data.image_size."
                )
        train, val = carve_validation(
            train_images, train_labels, self.val_size, self.split_seed, source=self.source
        )
        self.arrays = {"train": train, "val": val, "test": (test_images, test_labels)}
        train_transform = self.augment.sample_transform(self.image_size, self.normalize)
        eval_transform = v2.Compose(self.normalize.sample_transforms())
        self.train_set = UInt8ImageDataset(*self.arrays["train"], train_transform)
        self.val_set = UInt8ImageDataset(*self.arrays["val"], eval_transform)
        self.test_set = UInt8ImageDataset(*self.arrays["test"], eval_transform)

    def eval_preprocessing(self) -> EvalPreprocessing:
        return EvalPreprocessing.square(self.in_chans, self.image_size, self.normalize.mean, self.normalize.std)

    def uses_device_resident(self) -> bool:
        if self.device_resident == "auto":
            return self.device.type != "cpu" and self.augment.batchable
        return self.device_resident

    def _device_arrays(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.device
        cached = self._on_device.get(split)
        if cached is None or cached[0].device != device:
            images, labels = self.arrays[split]
            cached = (images.to(device), labels.to(device))
            self._on_device[split] = cached
        return cached

    def _device_loader(self, split: str) -> DeviceResidentLoader:
        if not self.arrays:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run")
        train = split == "train"
        images, labels = self._device_arrays(split)
        return DeviceResidentLoader(
            images,
            labels,
            sampler=self._sampler(range(len(labels)), train=train),
            batch_size=self.per_device_batch(train=train),
            drop_last=train,
            normalize=self.normalize,
            augment=self.augment if train else None,
        )

    def train_dataloader(self) -> DeviceResidentLoader | DataLoader:
        return self._device_loader("train") if self.uses_device_resident() else super().train_dataloader()

    def val_dataloader(self) -> DeviceResidentLoader | DataLoader:
        return self._device_loader("val") if self.uses_device_resident() else super().val_dataloader()

    def test_dataloader(self) -> DeviceResidentLoader | DataLoader:
        return self._device_loader("test") if self.uses_device_resident() else super().test_dataloader()
