"""Decode only what a crop needs: JPEG header first, then a scaled decode, crop and resize on uint8.

``decode_crop`` turns the bytes of an image file into one ``size`` x ``size`` uint8 crop:

1. the header gives the image's size (and its EXIF orientation) before any pixel is decoded,
   so the crop's box is drawn first (``resnet_lab.data.crops``);
2. libjpeg-turbo decodes at 1/2, 1/4 or 1/8 of the size (scaling in the DCT domain) when the
   crop would still be at least ``size`` pixels on each side, so a 4000 x 3000 photo is not
   decoded whole to make a 224 px crop;
3. only the crop is resized (antialiased bilinear on uint8, read in channels-last layout:
   the vectorized path of ``torch.nn.functional.interpolate``).

JPEGs decode with simplejpeg (libjpeg-turbo, the same decoder and the same pixels as
``torchvision.io.decode_jpeg``); other formats (PNG, WebP, BMP) and JPEGs it refuses (CMYK)
decode whole with torchvision, or Pillow. Why simplejpeg, and what was measured: docs/DATA.md.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F

from resnet_lab.data.crops import Box

JPEG_MAGIC = b"\xff\xd8\xff"
SCALE_FACTORS = (8, 4, 2)  # libjpeg-turbo's fast power-of-two scalings (1/8, 1/4, 1/2)
# What decoding a file can raise when it is not a readable image.
DECODE_ERRORS = (RuntimeError, OSError, ValueError)


def is_jpeg(data: bytes) -> bool:
    return data[:3] == JPEG_MAGIC


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(tiff[ifd : ifd + 2], order), 12):
        if entry + 12 > len(tiff):
            break
        if int.from_bytes(tiff[entry : entry + 2], order) == 0x0112:  # Orientation, a SHORT
            value = int.from_bytes(tiff[entry + 8 : entry + 10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8, 1 = upright) of JPEG ``data``; 1 when it has none.

    Walks the marker segments before the first scan to the APP1 "Exif" segment and reads
    tag 0x0112 of its first image directory (EXIF 2.3, section 4.6.4).
    """
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return 1
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no EXIF before the pixels
            return 1
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xE1 and data[position + 4 : position + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[position + 10 : position + 2 + length])
        position += 2 + length
    return 1


def orient(array, orientation: int, *, channels_first: bool = False):
    """``array`` turned upright for an EXIF ``orientation``, as Pillow's ``exif_transpose``.

    NumPy (H, W, C) arrays give views (negative strides included); torch (C, H, W) tensors
    (``channels_first``) give tensors (torch has no negative strides, so flips copy).
    """
    if orientation <= 1:
        return array
    if channels_first:
        rows, cols = -2, -1
        flip = lambda a, dims: torch.flip(a, dims)  # noqa: E731
        swap = lambda a: a.transpose(-2, -1)  # noqa: E731
    else:
        rows, cols = 0, 1
        flip = lambda a, dims: np.flip(a, dims)  # noqa: E731
        swap = lambda a: a.swapaxes(0, 1)  # noqa: E731
    if orientation == 2:
        return flip(array, (cols,))
    if orientation == 3:
        return flip(array, (rows, cols))
    if orientation == 4:
        return flip(array, (rows,))
    if orientation == 5:
        return swap(array)
    if orientation == 6:  # rotate 90 degrees clockwise
        return flip(swap(array), (cols,))
    if orientation == 7:
        return flip(swap(array), (rows, cols))
    return flip(swap(array), (rows,))  # 8: rotate 90 degrees counter-clockwise


def jpeg_size(data: bytes) -> tuple[int, int, int]:
    """(height, width, orientation) of JPEG ``data`` as displayed (after its EXIF orientation)."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    orientation = exif_orientation(data)
    return (width, height, orientation) if orientation >= 5 else (height, width, orientation)


def scale_factor(box: Box, size: int) -> int:
    """The largest of 8, 4, 2 that leaves ``box`` at least ``size`` pixels on each side; else 1."""
    for factor in SCALE_FACTORS:
        if box.height >= size * factor and box.width >= size * factor:
            return factor
    return 1


def decode_whole(data: bytes, in_chans: int = 3) -> np.ndarray:
    """Any image file to uint8 (H, W, in_chans), upright: torchvision's decoders, then Pillow's."""
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.RGB if in_chans == 3 else ImageReadMode.GRAY
    try:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode, apply_exif_orientation=True)
    except RuntimeError:
        from PIL import Image, ImageOps

        try:
            with Image.open(io.BytesIO(data)) as opened:
                converted = ImageOps.exif_transpose(opened).convert("RGB" if in_chans == 3 else "L")
        except Image.DecompressionBombError as error:
            raise ValueError(str(error)) from error
        return np.array(converted, dtype=np.uint8).reshape(converted.height, converted.width, in_chans)
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = (image.float() * (255 / 65535)).round().to(torch.uint8)
    if image.shape[0] != in_chans:  # WebP keeps alpha; grayscale asked of RGB, or the reverse
        from torchvision.transforms.v2 import functional as TF

        image = image[:3] if in_chans == 3 else TF.rgb_to_grayscale(image[:3])
        if image.shape[0] != in_chans:
            image = image.expand(in_chans, -1, -1)
    return image.permute(1, 2, 0).numpy()


def resize_crop(array: np.ndarray, box: Box, size: int) -> torch.Tensor:
    """``array[box]`` resized to a contiguous uint8 (C, size, size) tensor, antialiased bilinear."""
    # A contiguous (h, w, C) copy of the crop (rows of memcpy), seen as (1, C, h, w) in
    # channels-last layout: interpolate's vectorized uint8 path, which returns NCHW.
    crop = torch.from_numpy(np.ascontiguousarray(array[box.top : box.top + box.height, box.left : box.left + box.width]))
    crop = crop.permute(2, 0, 1).unsqueeze(0)
    if crop.shape[-2:] != (size, size):
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)
    return crop[0].contiguous()


def decode_crop(
    data: bytes,
    size: int,
    choose_box: Callable[[int, int], Box],
    *,
    in_chans: int = 3,
    fast_dct: bool = False,
) -> torch.Tensor:
    """The (in_chans, size, size) uint8 crop of an image file; ``choose_box(height, width)``
    picks the box from the upright image's size, before decoding (see the module docstring).

    fast_dct: libjpeg-turbo's fast integer IDCT and chroma upsampling (``fastdct``,
        ``fastupsample``): a few % less CPU per sample, pixels within ~1.6 levels on average
        of the accurate decoder's (PSNR ~40 dB on q90 photos).
    Raises one of ``DECODE_ERRORS`` when the data is not a readable image.
    """
    if is_jpeg(data):
        try:
            height, width, orientation = jpeg_size(data)
        except ValueError:
            height = 0  # CMYK and other JPEGs simplejpeg refuses: decoded whole below
        if height:
            box = choose_box(height, width)
            factor = scale_factor(box, size)
            stored_h, stored_w = (width, height) if orientation >= 5 else (height, width)
            try:
                array = simplejpeg.decode_jpeg(
                    data,
                    colorspace="RGB" if in_chans == 3 else "GRAY",
                    fastdct=fast_dct,
                    fastupsample=fast_dct,
                    min_height=math.ceil(stored_h / factor) if factor > 1 else 0,
                    min_width=math.ceil(stored_w / factor) if factor > 1 else 0,
                )
            except ValueError:
                array = None
            if array is not None:
                array = orient(array.reshape(array.shape[0], array.shape[1], in_chans), orientation)
                if factor > 1:
                    box = scale_box(box, array.shape[0] / height, array.shape[1] / width)
                return resize_crop(array, box, size)
    array = decode_whole(data, in_chans)
    return resize_crop(array, choose_box(array.shape[0], array.shape[1]), size)


def scale_box(box: Box, sy: float, sx: float) -> Box:
    """``box`` in an image scaled by ``sy`` x ``sx``, edges rounded to whole pixels."""
    top, left = round(box.top * sy), round(box.left * sx)
    bottom, right = round((box.top + box.height) * sy), round((box.left + box.width) * sx)
    return Box(top, left, max(1, bottom - top), max(1, right - left))
