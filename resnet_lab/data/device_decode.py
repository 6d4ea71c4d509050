"""Decoding on the training device: JPEG bytes from the workers, nvJPEG on the GPU.

With ``decode_on: device`` the workers only read each file and its header and draw the
sample's crop, flip and erase box exactly as the CPU path draws them (the same generator, so
the same geometry); the batch carries the encoded bytes. ``decode_batch`` then decodes the
whole batch with ``torchvision.io.decode_jpeg(device=...)`` (nvJPEG's batched decoder on a
GPU; libjpeg-turbo when the device is the CPU, which is how the tests run it), and crops,
resizes and flips each image on the device.

A file the workers cannot read as a JPEG header (PNG, CMYK JPEG, broken) is decoded and
cropped in the worker and travels as pixels; a JPEG the device decoder refuses is decoded
on the CPU; one nothing decodes becomes a black image labelled ``UNREADABLE``.
"""

from __future__ import annotations

import logging

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from resnet_lab.data.crops import Box
from resnet_lab.data.jpeg import DECODE_ERRORS, decode_crop, orient

log = logging.getLogger(__name__)

# geometry columns: the crop box (upright image), flip (0/1), EXIF orientation (1-8), or
# orientation 0 for a sample whose payload is its finished (C, size, size) crop.
TOP, LEFT, HEIGHT, WIDTH, FLIP, ORIENTATION = range(6)
PIXELS = 0


def collate_encoded(samples: list[tuple]) -> tuple:
    """(list of 1-D uint8 payloads, labels (N,), geometry (N, 6)[, erase boxes (N, 4)])."""
    columns = list(zip(*samples))
    payloads = list(columns[0])
    rest = [torch.as_tensor(columns[1], dtype=torch.int64), *(torch.stack(column) for column in columns[2:])]
    return (payloads, *rest)


def _finish(image: torch.Tensor, row: list[int], size: int) -> torch.Tensor:
    """Orient, crop, resize and flip one decoded (C, H, W) uint8 image, on its device."""
    image = orient(image, row[ORIENTATION], channels_first=True)
    crop = image[:, row[TOP] : row[TOP] + row[HEIGHT], row[LEFT] : row[LEFT] + row[WIDTH]]
    if crop.shape[-2:] != (size, size):
        crop = TF.resize(crop, [size, size], antialias=True)
    return crop.flip(-1) if row[FLIP] else crop


def decode_batch(
    payloads: list[torch.Tensor], geometry: torch.Tensor, *, size: int, in_chans: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, in_chans, size, size) images on ``device``, and a bool (N,) mask of the samples
    nothing could decode."""
    rows = geometry.tolist()
    images: list[torch.Tensor | None] = [None] * len(rows)
    failed = torch.zeros(len(rows), dtype=torch.bool)
    encoded = [i for i, row in enumerate(rows) if row[ORIENTATION] != PIXELS]
    mode = ImageReadMode.RGB if in_chans == 3 else ImageReadMode.GRAY
    decoded: list[torch.Tensor | None]
    try:
        decoded = decode_jpeg([payloads[i] for i in encoded], mode=mode, device=device) if encoded else []
    except RuntimeError:  # one bad image fails the batched call: decode one at a time
        decoded = []
        for i in encoded:
            try:
                decoded.append(decode_jpeg(payloads[i], mode=mode, device=device))
            except RuntimeError:
                decoded.append(None)
    for i, image in zip(encoded, decoded):
        row = rows[i]
        if image is None:
            try:  # the CPU decoder, which knows more JPEG variants
                box = Box(row[TOP], row[LEFT], row[HEIGHT], row[WIDTH])
                cpu = decode_crop(payloads[i].numpy().tobytes(), size, lambda h, w, box=box: box, in_chans=in_chans)
                images[i] = (cpu.flip(-1) if row[FLIP] else cpu).to(device)
            except DECODE_ERRORS as error:
                log.warning("skipping sample %d of this batch: it does not decode as an image (%s)", i, error)
                failed[i] = True
                images[i] = torch.zeros(in_chans, size, size, dtype=torch.uint8, device=device)
            continue
        images[i] = _finish(image, row, size)
    for i, row in enumerate(rows):
        if row[ORIENTATION] == PIXELS:
            images[i] = payloads[i].view(in_chans, size, size).to(device, non_blocking=True)
    return torch.stack(images), failed
