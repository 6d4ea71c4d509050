"""Training and evaluation transforms of decoded image files, and their knobs.

Training: RandomResizedCrop(``image_size``, ``scale``, ``ratio``), horizontal flip, an optional
AutoAugment-family policy on uint8, then float conversion, normalization and optional random
erasing. Evaluation: resize the shorter side to ``eval_resize_size``, centre crop
``image_size``, normalize. The recipe of torchvision's ImageNet references and timm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from resnet_lab.data.augment import auto_augment_transform
from resnet_lab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The AutoAugment-family policies for photos; autoaugment uses its learned ImageNet policy.
PHOTO_POLICIES = ("trivialaugment", "randaugment", "autoaugment")


def _pair(name: str, value: Sequence[float], *, low: float, high: float | None) -> tuple[float, float]:
    try:
        first, second = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"data.{name} must be a pair [min, max] of numbers, got {value!r}.") from None
    upper = "" if high is None else f" <= {high}"
    if not (low < first <= second and (high is None or second <= high)):
        raise ConfigError(f"data.{name}=[{first}, {second}] must satisfy {low} < min <= max{upper}.")
    return first, second


@dataclass(frozen=True)
class ImageFileTransforms:
    """The knobs of both transforms; see the module docstring and ``ImageFileDataModule``."""

    image_size: int
    eval_resize_size: int | None = None
    scale: Sequence[float] = (0.08, 1.0)
    ratio: Sequence[float] = (3 / 4, 4 / 3)
    flip: bool = True
    auto_augment: str | None = None
    random_erasing: float = 0.0
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalize the fields once, here
        set_(self, "scale", _pair("scale", self.scale, low=0.0, high=1.0))
        set_(self, "ratio", _pair("ratio", self.ratio, low=0.0, high=None))
        set_(self, "mean", tuple(float(m) for m in self.mean))
        set_(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ConfigError(f"data.mean and data.std need one value per channel and std > 0; got {self.mean}, {self.std}.")
        resize = self.eval_resize_size or round(self.image_size / 0.875)
        if resize < self.image_size:
            raise ConfigError(
                f"data.eval_resize_size={self.eval_resize_size} is smaller than data.image_size={self.image_size}; "
                "the centre crop must fit in the resized image."
            )
        set_(self, "eval_resize_size", resize)
        if self.auto_augment is not None and self.auto_augment not in PHOTO_POLICIES:
            raise ConfigError(
                f"data.auto_augment={self.auto_augment!r} is not a policy; choose one of {', '.join(PHOTO_POLICIES)} or null."
            )
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ConfigError(f"data.random_erasing is a probability in [0, 1], got {self.random_erasing}.")

    def _normalize(self) -> list:
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

    def train(self) -> v2.Compose:
        steps: list = [v2.RandomResizedCrop(self.image_size, scale=self.scale, ratio=self.ratio, antialias=True)]
        if self.flip:
            steps.append(v2.RandomHorizontalFlip())
        if self.auto_augment is not None:
            steps.append(auto_augment_transform(self.auto_augment, dataset_policy="imagenet"))
        steps += self._normalize()
        if self.random_erasing:
            steps.append(v2.RandomErasing(p=self.random_erasing))
        return v2.Compose(steps)

    def eval(self) -> v2.Compose:
        return v2.Compose(
            [v2.Resize(self.eval_resize_size, antialias=True), v2.CenterCrop(self.image_size), *self._normalize()]
        )
