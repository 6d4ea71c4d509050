"""The fast path of image files: uint8 crops from the workers, float conversion on the device.

Per sample, in a DataLoader worker (``FastImageDataset``): read the file's bytes, draw the
crop from the header's size, decode no more than the crop needs, resize the crop on uint8,
flip, optionally an AutoAugment-family policy on uint8. Batches leave the workers as uint8
(N, C, H, W), a quarter of the bytes of float32 through inter-process memory and the
host-to-device copy. On the device (``BatchFinisher``, called from the data module's
``on_after_batch_transfer``): float conversion and normalization, computed exactly as
torchvision's ``ToDtype(float32, scale=True)`` + ``Normalize`` compute them, then random
erasing with the boxes the workers drew.

Every random draw of a training sample comes from a generator seeded with
``(seed, epoch, index)`` (``resnet_lab.data.crops.sample_generator``): the training sampler
hands each index to the workers with its epoch (``EpochSeededSampler``), so a sample's
augmentation depends on neither the worker that draws it nor on how many there are, and a
resumed run repeats the interrupted epoch's augmentation exactly.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from resnet_lab.data.base import UNREADABLE
from resnet_lab.data.crops import (
    Box,
    center_crop_box,
    erase_box,
    random_resized_crop_box,
    sample_generator,
)
from resnet_lab.data.device_decode import FLIP, PIXELS
from resnet_lab.data.jpeg import DECODE_ERRORS, decode_crop, is_jpeg, jpeg_size
from resnet_lab.data.order import ResumableDistributedSampler

log = logging.getLogger(__name__)


class FileSource:
    """Labelled image files, by index: ``read(index)`` gives the file's bytes and its label.

    Paths are held as one NumPy bytes array, which fork-started workers share without
    copy-on-write faults from reference counts.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int]) -> None:
        self.paths = np.array([str(path).encode() for path in paths], dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return self.paths[index].decode()

    def read(self, index: int) -> tuple[bytes, int]:
        with open(self.paths[index], "rb") as file:
            return file.read(), int(self.labels[index])


@dataclass(frozen=True)
class CropPlan:
    """What the fast path makes of one image; the knobs of ``ImageFileTransforms``.

    Training: ``RandomResizedCrop(image_size, scale, ratio)``, horizontal flip, an optional
    AutoAugment-family policy, then (on the device) normalization and random erasing.
    Evaluation: the centre ``image_size`` crop of the image resized to ``eval_resize_size``
    on its shorter side, as one crop-and-resize of the source.
    fast_dct: see ``resnet_lab.data.jpeg.decode_crop``.
    """

    image_size: int
    eval_resize_size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    auto_augment: str | None = None
    random_erasing: float = 0.0
    in_chans: int = 3
    fast_dct: bool = False


class FastImageDataset(Dataset):
    """Samples of ``source`` (``FileSource``, ``ShardSource``) as uint8 (in_chans, image_size,
    image_size) crops and labels.

    Indexed by ``index`` (evaluation) or ``(index, epoch)`` (training, from
    ``EpochSeededSampler``). Training samples with random erasing on are
    ``(image, label, erase_box)``, the box an int64 (top, left, height, width), all zero for
    no erasing. A file that does not decode yields a black image and ``UNREADABLE``.

    decode_on_device: instead of the image, the file's bytes and the sample's geometry, for
        ``resnet_lab.data.device_decode`` (``(payload, label, geometry[, erase_box])``).
    """

    def __init__(self, source, plan: CropPlan, *, train: bool, seed: int = 0, decode_on_device: bool = False) -> None:
        self.source = source
        self.plan = plan
        self.train = train
        self.seed = seed
        self.decode_on_device = decode_on_device
        self._policy = None
        if train and plan.auto_augment is not None:
            if decode_on_device:
                raise ValueError("AutoAugment-family policies run on decoded images in the workers")
            from resnet_lab.data.augment import auto_augment_transform

            self._policy = auto_augment_transform(plan.auto_augment, dataset_policy="imagenet")

    def __len__(self) -> int:
        return len(self.source)

    @property
    def paths(self) -> np.ndarray:
        """The files' paths (UTF-8 bytes), as ``ImageFileDataset`` has them (files only)."""
        return self.source.paths

    @property
    def labels(self) -> np.ndarray:
        """Every sample's label, in index order."""
        return self.source.labels

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        plan = self.plan
        rng = sample_generator(self.seed, epoch, index) if self.train else None
        if rng is None:
            def choose(height: int, width: int) -> Box:
                return center_crop_box(height, width, plan.image_size, plan.eval_resize_size)
        else:
            def choose(height: int, width: int) -> Box:
                return random_resized_crop_box(height, width, plan.scale, plan.ratio, rng)
        geometry = None
        try:
            data, label = self.source.read(index)
        except OSError:
            data, label = None, UNREADABLE
        header = None
        if self.decode_on_device and data is not None and is_jpeg(data):
            try:
                header = jpeg_size(data)
            except ValueError:  # a JPEG simplejpeg cannot read (CMYK): decoded here instead
                pass
        if header is not None:  # the device decodes: only the box is drawn here
            box = choose(header[0], header[1])
            image = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            geometry = [*box, 0, header[2]]
        else:
            image, label = self._decode(data, label, choose, index)
        if rng is None:
            return (image, label) if geometry is None else (image, label, self._geometry(geometry))
        # Every draw is made whether its option is on or not, so that turning one on leaves
        # the others' draws as they were.
        flip, policy_seed, erase = rng.random() < 0.5, rng.getrandbits(63), rng.random() < plan.random_erasing
        if plan.flip and flip:
            if geometry is None:
                image = image.flip(-1)
            else:
                geometry[FLIP] = 1
        if self._policy is not None:
            image = self._augment(image, policy_seed)
        sample = (image, label) if not self.decode_on_device else (image, label, self._geometry(geometry))
        if not plan.random_erasing:
            return sample
        box = erase_box(plan.image_size, plan.image_size, rng) if erase else Box(0, 0, 0, 0)
        return (*sample, torch.tensor(box, dtype=torch.int64))

    def _decode(self, data: bytes | None, label: int, choose, index: int) -> tuple[torch.Tensor, int]:
        plan = self.plan
        try:
            if data is None:
                raise OSError("the file could not be read")
            return decode_crop(data, plan.image_size, choose, in_chans=plan.in_chans, fast_dct=plan.fast_dct), label
        except DECODE_ERRORS as error:
            log.warning("skipping %s: it does not decode as an image (%s)", self.source.name(index), error)
            return torch.zeros(plan.in_chans, plan.image_size, plan.image_size, dtype=torch.uint8), UNREADABLE

    def _geometry(self, geometry: list[int] | None) -> torch.Tensor:
        """The geometry row of ``device_decode``; None: the payload is the finished crop."""
        return torch.tensor(geometry if geometry is not None else [0, 0, 0, 0, 0, PIXELS], dtype=torch.int64)

    def _augment(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """The policy (torchvision's, which draws from torch's global generator) under a
        per-sample seed, leaving the process's generator as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._policy(image)


class EpochTagging:
    """Mixin for a ``DistributedSampler``: yields ``(index, epoch)`` so that the workers can
    seed each sample. Put it first among the bases; see ``epoch_seeded``."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = super().__iter__()  # a resumable sampler sets the epoch first on a resumed run
        epoch = self.epoch
        return ((index, epoch) for index in indices)


@functools.cache
def epoch_seeded(sampler_class: type) -> type:
    """``sampler_class`` with ``EpochTagging``: the same order, each index with its epoch."""
    if issubclass(sampler_class, EpochTagging):
        return sampler_class
    return type(f"EpochSeeded{sampler_class.__name__}", (EpochTagging, sampler_class), {"__module__": __name__})


class EpochSeededSampler(EpochTagging, ResumableDistributedSampler):
    """The training sampler of the fast path: ``ResumableDistributedSampler``'s order,
    sharding and resume, each index with its epoch."""


class BatchFinisher:
    """uint8 batches to normalized float32 (N, C, H, W) on their device, then random erasing.

    The float math is torchvision's, op for op (``to(float32).mul_(1 / 255)``, then
    ``sub_(mean).div_(std)``), so the result is bit for bit the batch of ``ToDtype`` +
    ``Normalize``; erasing fills the boxes with 0, as ``RandomErasing(value=0)`` after
    ``Normalize`` does.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=device).view(-1, 1, 1)
            self._constants[device] = (mean, std)
        return self._constants[device]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) to normalized float32 (N, C, H, W)."""
        mean, std = self._on(images.device)
        return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)

    @staticmethod
    def erase(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Zero each image's box (N, 4: top, left, height, width; height 0 for none)."""
        h, w = images.shape[-2:]
        rows = torch.arange(h, device=images.device).view(1, h, 1)
        cols = torch.arange(w, device=images.device).view(1, 1, w)
        top, left, height, width = (boxes[:, i].view(-1, 1, 1) for i in range(4))
        inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
        return images.masked_fill(inside.unsqueeze(1), 0.0)
