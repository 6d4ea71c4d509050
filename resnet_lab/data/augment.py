"""Training augmentation of small images, as batched tensor ops and as per-sample transforms.

``SmallImageAugment`` describes one augmentation (pad and random crop, horizontal flip,
Cutout or random erasing, an optional AutoAugment-family policy) and builds it two ways:

* ``sample_transform``: a torchvision ``v2`` pipeline run on one image at a time in
  DataLoader workers (the reference);
* ``apply_batch``: the same distribution as a few batched tensor ops on the training device
  (the fast path, after airbench's ``batch_crop`` / ``batch_flip_lr``).

``tests/data/test_augment.py`` checks that the two agree in distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from resnet_lab.errors import ConfigError

PADDING_MODES = ("constant", "reflect")
AUTO_AUGMENT_POLICIES = ("autoaugment", "randaugment", "trivialaugment")


class Normalize:
    """uint8 images to float32 ``(x / 255 - mean) / std`` in one fused multiply-add per pixel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or min(std) <= 0:
            raise ConfigError(f"normalization needs one mean and one positive std per channel; got {mean}, {std}.")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
            mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            self._constants[device] = (1.0 / (255.0 * std), -mean / std)
        return self._constants[device]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        scale, shift = self._on(images.device)
        return torch.addcmul(shift, images.float(), scale)

    def sample_transforms(self) -> list:
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]


def crop_flip(
    images: torch.Tensor,
    *,
    pad: int,
    flip: bool,
    padding_mode: str = "constant",
    fill: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pad by ``pad`` pixels, crop back to the input size at a random offset, flip half.

    Per image, like torchvision's ``RandomCrop(size, padding=pad)`` followed by
    ``RandomHorizontalFlip()``: each of the ``(2 pad + 1)^2`` offsets and each flip equally
    likely. Crop and flip are one ``gather`` with a per-image index, for any batch size.
    """
    n, c, h, w = images.shape
    device = images.device
    if pad == 0:
        padded = images
    elif padding_mode == "constant":
        padded = F.pad(images, (pad, pad, pad, pad), value=fill)
    else:
        padded = F.pad(images, (pad, pad, pad, pad), mode=padding_mode)
    width = w + 2 * pad
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=device, generator=generator)
    cols = torch.arange(w, device=device).view(1, 1, w)
    if flip:
        flipped = torch.rand((n, 1, 1), device=device, generator=generator) < 0.5
        cols = torch.where(flipped, w - 1 - cols, cols)
    rows = dy + torch.arange(h, device=device).view(1, h, 1)
    index = (rows * width + dx + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


def _boxes_mask(top, left, height, width, h: int, w: int) -> torch.Tensor:
    """(N, 1, h, w) mask, true inside each image's box [top, top + height) x [left, left + width)."""
    rows = torch.arange(h, device=top.device).view(1, h, 1)
    cols = torch.arange(w, device=top.device).view(1, 1, w)
    top, left = top.view(-1, 1, 1), left.view(-1, 1, 1)
    height, width = height.view(-1, 1, 1), width.view(-1, 1, 1)
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    return inside.unsqueeze(1)


def cutout(images: torch.Tensor, size: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): zero a ``size`` x ``size`` square centred anywhere in the
    image, clipped at the border. On normalized images zero is the data set mean."""
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n,), device=images.device, generator=generator)
    cx = torch.randint(0, w, (n,), device=images.device, generator=generator)
    side = torch.full_like(cy, size)
    mask = _boxes_mask(cy - size // 2, cx - size // 2, side, side, h, w)
    return images.masked_fill(mask, 0.0)


def random_erasing(
    images: torch.Tensor,
    p: float,
    *,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    attempts: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017) with torchvision's ``RandomErasing(p)`` sampling.

    With probability ``p`` an image gets a box of area ``scale`` x image area and aspect ratio
    ``ratio`` (log-uniform), set to zero; like torchvision, up to 10 draws until the box fits,
    none erased if none does. All attempts of all images are drawn at once.
    """
    n, _, h, w = images.shape
    device = images.device

    def uniform(low: float, high: float, shape) -> torch.Tensor:
        return torch.rand(shape, device=device, generator=generator) * (high - low) + low

    apply = torch.rand(n, device=device, generator=generator) < p
    area = h * w * uniform(scale[0], scale[1], (n, attempts))
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1]), (n, attempts)))
    heights = torch.round(torch.sqrt(area * aspect)).long()
    widths = torch.round(torch.sqrt(area / aspect)).long()
    fits = (heights < h) & (widths < w)
    first = fits.int().argmax(dim=1, keepdim=True)  # argmax returns the first maximal entry
    height = heights.gather(1, first).squeeze(1)
    width = widths.gather(1, first).squeeze(1)
    erase = apply & fits.any(dim=1)
    top = (torch.rand(n, device=device, generator=generator) * (h - height + 1)).long()
    left = (torch.rand(n, device=device, generator=generator) * (w - width + 1)).long()
    mask = _boxes_mask(top, left, height * erase, width * erase, h, w)
    return images.masked_fill(mask, 0.0)


class Cutout:
    """Per-image Cutout for the DataLoader path: the batched op on a batch of one."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return cutout(image.unsqueeze(0), self.size).squeeze(0)

    def __repr__(self) -> str:
        return f"Cutout(size={self.size})"


def auto_augment_transform(policy: str, *, dataset_policy: str = "cifar10") -> v2.Transform:
    """torchvision's AutoAugment (with the data set's learned policy), RandAugment or
    TrivialAugmentWide, with their published default magnitudes."""
    if policy == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy(dataset_policy))
    if policy == "randaugment":
        return v2.RandAugment()
    if policy == "trivialaugment":
        return v2.TrivialAugmentWide()
    raise ConfigError(
        f"data.auto_augment={policy!r} is not a policy; choose one of {', '.join(AUTO_AUGMENT_POLICIES)} or null."
    )


@dataclass(frozen=True)
class SmallImageAugment:
    """The training augmentation of CIFAR-sized images; see the module docstring.

    pad: pixels of padding before the random crop back to the input size (0: no crop).
    cutout: side in pixels of the Cutout square (0: off).
    random_erasing: probability of random erasing per image (0: off).
    auto_augment: ``autoaugment``, ``randaugment``, ``trivialaugment`` or None; applied to
        uint8 images after crop and flip, so only the DataLoader path can run it.
    """

    pad: int = 4
    flip: bool = True
    padding_mode: str = "constant"
    cutout: int = 0
    random_erasing: float = 0.0
    auto_augment: str | None = None
    auto_augment_dataset: str = "cifar10"

    def __post_init__(self) -> None:
        if not isinstance(self.pad, int) or self.pad < 0:
            raise ConfigError(f"data.pad must be an integer >= 0 (pixels), got {self.pad!r}.")
        if self.padding_mode not in PADDING_MODES:
            raise ConfigError(
                f"data.padding_mode={self.padding_mode!r} is not supported; choose one of {', '.join(PADDING_MODES)}."
            )
        if not isinstance(self.cutout, int) or self.cutout < 0:
            raise ConfigError(f"data.cutout must be an integer >= 0 (pixels; 0 = off), got {self.cutout!r}.")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ConfigError(f"data.random_erasing is a probability in [0, 1], got {self.random_erasing!r}.")
        if self.cutout and self.random_erasing:
            raise ConfigError(
                "data.cutout and data.random_erasing both erase a box; set one of them to 0."
            )
        if self.auto_augment is not None:
            auto_augment_transform(self.auto_augment, dataset_policy=self.auto_augment_dataset)

    @property
    def batchable(self) -> bool:
        """Whether ``apply_batch`` can run this augmentation (the AutoAugment family cannot)."""
        return self.auto_augment is None

    def sample_transform(self, image_size: int, normalize: Normalize) -> v2.Compose:
        steps: list = []
        if self.pad:
            steps.append(v2.RandomCrop(image_size, padding=self.pad, padding_mode=self.padding_mode))
        if self.flip:
            steps.append(v2.RandomHorizontalFlip())
        if self.auto_augment is not None:
            steps.append(auto_augment_transform(self.auto_augment, dataset_policy=self.auto_augment_dataset))
        steps += normalize.sample_transforms()
        if self.cutout:
            steps.append(Cutout(self.cutout))
        if self.random_erasing:
            steps.append(v2.RandomErasing(p=self.random_erasing))
        return v2.Compose(steps)

    def apply_batch(
        self, images: torch.Tensor, normalize: Normalize, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8 (N, C, H, W) images to augmented, normalized float32 images, on their device."""
        if not self.batchable:
            raise ConfigError(
                f"data.auto_augment={self.auto_augment} runs per image and cannot run on the "
                "device-resident path; set data.device_resident=false (or auto)."
            )
        if self.pad or self.flip:
            images = crop_flip(
                images, pad=self.pad, flip=self.flip, padding_mode=self.padding_mode, generator=generator
            )
        images = normalize(images)
        if self.cutout:
            images = cutout(images, self.cutout, generator=generator)
        if self.random_erasing:
            images = random_erasing(images, self.random_erasing, generator=generator)
        return images
