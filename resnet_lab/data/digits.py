"""scikit-learn's bundled handwritten digits, upsampled to 32x32: real data with no download.

1,797 grayscale 8x8 images (UCI optical digits, 0-16 intensity levels). The split is fixed
by a seed: 20 % test, 10 % validation, the rest training, stratified by class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from resnet_lab.data.augment import crop_flip
from resnet_lab.data.base import ImageDataModule
from resnet_lab.data.preprocessing import EvalPreprocessing
from resnet_lab.errors import ConfigError

# Mean and std of all 1,797 upsampled images, pixel values scaled to [0, 1].
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3236


def _upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    images = images.reshape(-1, 1, 8, 8) / 16.0
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


class DigitsDataModule(ImageDataModule):
    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_chans: int = 1,
        image_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        max_shift: int = 2,
        split_seed: int = 0,
        **loader_options,
    ) -> None:
        if num_classes != 10 or in_chans != 1:
            raise ConfigError(
                f"the digits data set has 10 classes and 1 channel; got num_classes={num_classes}, "
                f"in_chans={in_chans}. Remove those overrides."
            )
        if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(
                "data.val_fraction and data.test_fraction must lie in [0, 1) and (0, 1) with a sum "
                f"below 1; got {val_fraction} and {test_fraction}."
            )
        super().__init__(
            num_classes=num_classes, in_chans=in_chans, image_size=image_size, **loader_options
        )
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.max_shift = max_shift
        self.split_seed = split_seed

    def build_sets(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = _upsample(torch.as_tensor(digits.images, dtype=torch.float32), self.image_size)
        images = (images - DIGITS_MEAN) / DIGITS_STD
        labels = torch.as_tensor(digits.target, dtype=torch.long)
        index = torch.arange(len(labels)).numpy()
        rest, test = train_test_split(
            index, test_size=self.test_fraction, stratify=labels, random_state=self.split_seed
        )
        val_share = self.val_fraction / (1 - self.test_fraction)
        if val_share > 0:
            train, val = train_test_split(
                rest, test_size=val_share, stratify=labels[rest], random_state=self.split_seed
            )
        else:
            train, val = rest, rest[:0]
        self.train_set = TensorDataset(images[train], labels[train])
        self.val_set = TensorDataset(images[val], labels[val])
        self.test_set = TensorDataset(images[test], labels[test])

    def eval_preprocessing(self) -> EvalPreprocessing:
        """A new image as the digits are: grey, ``image_size`` square, light ink on dark."""
        return EvalPreprocessing.square(1, self.image_size, (DIGITS_MEAN,), (DIGITS_STD,))

    def train_transform_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Random translation by up to ``max_shift`` pixels, on the device.

        The border is filled with the batch minimum (the normalized background).
        """
        if self.max_shift == 0:
            return images
        return crop_flip(images, pad=self.max_shift, flip=False, fill=float(images.amin()))
