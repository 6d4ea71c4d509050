"""What a data module does to an image before the network sees it at evaluation time.

``EvalPreprocessing`` is the description (channels, resize, centre crop, mean and std) that
each data module gives through ``eval_preprocessing()``. It travels in checkpoints and in
exported files as a plain dict, so a trained model can be used on new images without the data
it was trained on; ``transform()`` applies it to one image, like torchvision's
``weights.transforms()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2

from resnet_lab.data.crops import center_crop_box
from resnet_lab.data.jpeg import resize_crop

CHANNEL_MODES = {1: "L", 3: "RGB"}  # Pillow's mode for each channel count


@dataclass(frozen=True)
class EvalPreprocessing:
    """in_chans: 3 (RGB) or 1 (grayscale); every image is converted to it.
    resize_size: the shorter side is resized to this (bilinear, antialiased).
    crop_size: then the centre ``crop_size`` x ``crop_size`` square is kept.
    mean, std: per channel, of pixel values scaled to [0, 1].
    crop_first: the same square cut from the image first and resized alone, as the fast
        image-file path evaluates (``center_crop_box``: the same pixels up to resampling,
        without resizing the rest); data modules on that path set it, so a new image is
        treated exactly as their test images were.
    """

    in_chans: int
    resize_size: int
    crop_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_first: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalize the fields once, here
        set_(self, "mean", tuple(float(m) for m in self.mean))
        set_(self, "std", tuple(float(s) for s in self.std))
        if self.in_chans not in CHANNEL_MODES:
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans!r}")
        if not 0 < self.crop_size <= self.resize_size:
            raise ValueError(f"need 0 < crop_size <= resize_size, got {self.crop_size} and {self.resize_size}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans or min(self.std) <= 0:
            raise ValueError(f"need {self.in_chans} means and positive stds, got {self.mean} and {self.std}")

    @classmethod
    def square(cls, in_chans: int, size: int, mean: Sequence[float], std: Sequence[float]) -> EvalPreprocessing:
        """For data sets whose images are ``size`` x ``size`` already (CIFAR, digits): a new
        image's shorter side becomes ``size``, and its centre square is kept."""
        return cls(in_chans=in_chans, resize_size=size, crop_size=size, mean=tuple(mean), std=tuple(std))

    def to_dict(self) -> dict[str, Any]:
        """Plain values only: checkpoints are read with ``weights_only=True``."""
        return {"in_chans": self.in_chans, "resize_size": self.resize_size, "crop_size": self.crop_size,
                "mean": list(self.mean), "std": list(self.std), "crop_first": self.crop_first}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvalPreprocessing:
        """The inverse of ``to_dict``; raises ``ValueError`` naming what is wrong."""
        if not isinstance(values, Mapping):
            raise ValueError(f"expected a mapping, got {type(values).__name__}")
        fields = ("in_chans", "resize_size", "crop_size", "mean", "std")
        missing = [name for name in fields if name not in values]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        try:
            return cls(in_chans=int(values["in_chans"]), resize_size=int(values["resize_size"]),
                       crop_size=int(values["crop_size"]), mean=tuple(values["mean"]), std=tuple(values["std"]),
                       crop_first=bool(values.get("crop_first", False)))  # absent before it existed
        except TypeError as error:
            raise ValueError(str(error)) from None

    def transform(self) -> EvalTransform:
        return EvalTransform(self)


class EvalTransform:
    """Applies an ``EvalPreprocessing`` to one image: a PIL image (any mode) or a uint8
    tensor (C, H, W) or (H, W), as ``torchvision.io.decode_image`` returns; gives float32
    (in_chans, crop_size, crop_size). Both take the same tensor path, so a PIL image gives
    what its pixels as a tensor give."""

    def __init__(self, preprocessing: EvalPreprocessing) -> None:
        self.preprocessing = preprocessing

    def __repr__(self) -> str:
        p = self.preprocessing
        return (f"EvalTransform(resize={p.resize_size}, centre crop={p.crop_size}, in_chans={p.in_chans}, "
                f"mean={p.mean}, std={p.std})")

    def to_uint8(self, image: Any) -> torch.Tensor:
        """uint8 (in_chans, H, W): colour to grey (or back), alpha dropped."""
        in_chans = self.preprocessing.in_chans
        if not isinstance(image, torch.Tensor):
            from PIL import Image

            if not isinstance(image, Image.Image):
                raise TypeError(f"expected a PIL image or a uint8 tensor, got {type(image).__name__}")
            return v2.functional.pil_to_tensor(image.convert(CHANNEL_MODES[in_chans]))
        if image.dtype != torch.uint8 or image.ndim not in (2, 3):
            raise TypeError(
                f"expected a uint8 tensor (C, H, W) or (H, W), as torchvision.io.decode_image returns; "
                f"got {image.dtype} {tuple(image.shape)}"
            )
        if image.ndim == 2:
            image = image.unsqueeze(0)
        channels = image.shape[0]
        if channels in (2, 4):  # grey + alpha, RGB + alpha
            image, channels = image[: channels - 1], channels - 1
        if channels not in (1, 3):
            raise TypeError(f"expected 1 to 4 channels (grey, grey+alpha, RGB, RGBA), got {channels}")
        if channels == in_chans:
            return image
        if in_chans == 1:
            return v2.functional.rgb_to_grayscale(image)
        return image.expand(3, -1, -1).contiguous()

    def __call__(self, image: Any) -> torch.Tensor:
        p = self.preprocessing
        image = self.to_uint8(image)
        if p.crop_first:
            box = center_crop_box(image.shape[-2], image.shape[-1], p.crop_size, p.resize_size)
            image = resize_crop(image.permute(1, 2, 0).numpy(), box, p.crop_size)
        else:
            image = v2.functional.resize(image, [p.resize_size], antialias=True)
            image = v2.functional.center_crop(image, [p.crop_size, p.crop_size])
        image = v2.functional.to_dtype(image, torch.float32, scale=True)
        return v2.functional.normalize(image, list(p.mean), list(p.std))
