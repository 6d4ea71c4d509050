"""Where the crops of the fast image path fall, drawn before any pixel is decoded.

The fast path (``resnet_lab.data.fast_images``) decides the geometry of a sample from the
image's size alone, read from its header, so that the decoder can decode no more than the
crop needs. The draws follow torchvision's ``RandomResizedCrop`` and ``RandomErasing``
(``v2``) step for step, with a ``random.Random`` per sample in place of torch's global
generator: ``tests/data/test_fast_images.py`` checks that the distributions of crop scale,
aspect ratio and position match torchvision's within sampling error.

A sample's generator is seeded with ``(seed, epoch, index)``, so its augmentation does not
depend on which worker process draws it, how many there are, or whether the run was resumed.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

ATTEMPTS = 10  # torchvision's RandomResizedCrop and RandomErasing try ten boxes
ERASE_SCALE = (0.02, 0.33)  # torchvision's RandomErasing defaults (Zhong et al. 2017)
ERASE_RATIO = (0.3, 3.3)
_MASK64 = (1 << 64) - 1


class Box(NamedTuple):
    """A rectangle in pixels: rows ``top .. top + height``, columns ``left .. left + width``."""

    top: int
    left: int
    height: int
    width: int


def sample_generator(seed: int, epoch: int, index: int) -> random.Random:
    """The generator of one sample's augmentation, a pure function of (seed, epoch, index).

    ``random.Random`` seeds its Mersenne Twister from all bits of an integer
    (``init_by_array``), so packing the three numbers into one gives independent streams,
    in a few microseconds.
    """
    return random.Random(((seed & _MASK64) << 128) | ((epoch & _MASK64) << 64) | (index & _MASK64))


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: random.Random,
) -> Box:
    """torchvision's ``RandomResizedCrop`` box for an image of ``height`` x ``width``.

    Up to ten draws of an area fraction (uniform in ``scale``) and an aspect ratio
    (log-uniform in ``ratio``) until the box fits, then a uniform position; if none fits, the
    largest centred box whose aspect ratio lies in ``ratio``.
    """
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(ATTEMPTS):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return Box(rng.randint(0, height - h), rng.randint(0, width - w), h, w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return Box((height - h) // 2, (width - w) // 2, h, w)


def center_crop_box(height: int, width: int, image_size: int, resize_size: int) -> Box:
    """The part of an image that ``Resize(resize_size)`` (shorter side) then
    ``CenterCrop(image_size)`` keep, in the image's own pixels.

    Cropping this box and resizing it to ``image_size`` gives the evaluation crop without
    resizing the rest of the image; its edges are rounded to whole source pixels.
    """
    # The resized size as torchvision computes it: the longer side truncated.
    if height <= width:
        resized_h, resized_w = resize_size, int(resize_size * width / height)
    else:
        resized_h, resized_w = int(resize_size * height / width), resize_size
    top = int(round((resized_h - image_size) / 2.0))
    left = int(round((resized_w - image_size) / 2.0))
    sy, sx = height / resized_h, width / resized_w
    first_row = min(max(round(top * sy), 0), height - 1)
    first_col = min(max(round(left * sx), 0), width - 1)
    end_row = min(round((top + image_size) * sy), height)
    end_col = min(round((left + image_size) * sx), width)
    return Box(first_row, first_col, max(1, end_row - first_row), max(1, end_col - first_col))


def erase_box(height: int, width: int, rng: random.Random) -> Box:
    """torchvision's ``RandomErasing`` box (its default scale and ratio) for an image of
    ``height`` x ``width``; an empty box (height 0) when none of ten draws fits."""
    area = height * width
    log_low, log_high = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    for _ in range(ATTEMPTS):
        erase_area = area * rng.uniform(*ERASE_SCALE)
        aspect = math.exp(rng.uniform(log_low, log_high))
        h = int(round(math.sqrt(erase_area * aspect)))
        w = int(round(math.sqrt(erase_area / aspect)))
        if h < height and w < width:
            return Box(rng.randint(0, height - h), rng.randint(0, width - w), h, w)
    return Box(0, 0, 0, 0)
