"""Labelled image files on disk: what the ImageNet-style and the folder data modules share.

* Scanning: class folders whose names are the classes, each checked whole before training
  (``scan_class_folders``): a missing or empty class folder, or a file that is not an image,
  is a ``DataError`` naming the path. Hidden files (``.DS_Store``) are ignored.
* Decoding (``decode_image_file``): JPEG, PNG, WebP and BMP in any mode (grayscale, RGBA,
  palette, 16-bit) to uint8 with ``in_chans`` channels, upright (EXIF orientation applied).
* ``ImageFileDataset``: (path, label) samples decoded and transformed in DataLoader workers;
  an image that does not decode is skipped, counted and named (see ``UNREADABLE``).
* Seeded splits: ``random_holdout`` (a number of images) and ``stratified_split`` (a fraction
  of every class).
* ``ImageFileDataModule``: the data-module base holding the transform knobs
  (``resnet_lab.data.image_transforms``) and building the datasets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2

from resnet_lab.data.base import UNREADABLE, ImageDataModule
from resnet_lab.data.fast_path import FastImagePath
from resnet_lab.data.image_transforms import IMAGENET_MEAN, IMAGENET_STD, ImageFileTransforms
from resnet_lab.data.preprocessing import EvalPreprocessing
from resnet_lab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# What decode_image_file reads; any other file in a class folder is an error.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp", ".bmp")
CHANNELS = (1, 3)


def _decode_with_pillow(path: str, in_chans: int) -> torch.Tensor:
    """BMP, and anything else torchvision's decoders refuse that Pillow can read."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB" if in_chans == 3 else "L")
        array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], in_chans).copy()).permute(2, 0, 1)


def decode_image_file(path: str, in_chans: int = 3) -> torch.Tensor:
    """uint8 (in_chans, H, W) of an image file; raises (RuntimeError, OSError, ValueError) if
    neither torchvision nor Pillow can decode it.

    3 channels: RGB, alpha dropped (as Pillow's ``convert("RGB")``, which torchvision's and
    timm's ImageFolder loaders use); 1 channel: luminance (ITU-R 601, as Pillow's "L").
    16-bit PNGs are scaled to 8 bits.
    """
    from PIL import Image

    data = read_file(path)
    # torchvision's WebP decoder has no grayscale output (it warns once per image and returns
    # colour): decode WebP to RGB and convert below.
    webp = bytes(data[:4].tolist()) == b"RIFF" and bytes(data[8:12].tolist()) == b"WEBP"
    mode = ImageReadMode.RGB if in_chans == 3 or webp else ImageReadMode.GRAY
    try:
        image = decode_image(data, mode=mode, apply_exif_orientation=True)
    except RuntimeError:
        try:
            return _decode_with_pillow(path, in_chans)
        except Image.DecompressionBombError as error:
            raise ValueError(str(error)) from error
    if image.dtype != torch.uint8:
        image = v2.functional.to_dtype(image, torch.uint8, scale=True)
    if image.shape[0] != in_chans:
        image = v2.functional.rgb_to_grayscale(image) if in_chans == 1 else image.expand(3, -1, -1).contiguous()
    return image


class ImageFileDataset(Dataset):
    """(path, label) samples decoded to uint8 ``in_chans`` tensors, then ``transform``ed.

    A file that does not decode yields a blank image and the label UNREADABLE, which the data
    module drops from the batch (and counts) after the transfer; the file is named in the log.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform, image_size: int, in_chans: int = 3) -> None:
        # NumPy arrays rather than lists of Python objects: fork-started workers then share
        # them without copy-on-write page faults from reference counting. UTF-8 bytes, not
        # NumPy's 4-byte-per-character str: 1.28 M ImageNet paths take ~0.1 GB, not ~0.5 GB.
        self.paths = np.array([path.encode() for path in paths], dtype=np.bytes_)
        self.labels = np.array(labels, dtype=np.int64)
        self.transform = transform
        self.image_size = image_size
        self.in_chans = in_chans

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        path = self.paths[index].decode()
        try:
            image = decode_image_file(path, self.in_chans)
        except (RuntimeError, OSError, ValueError) as error:
            log.warning("skipping %s: it does not decode as an image (%s)", path, error)
            return torch.zeros(self.in_chans, self.image_size, self.image_size), UNREADABLE
        return self.transform(image), int(self.labels[index])


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def class_folder_names(folder: Path) -> list[str]:
    """The sorted names of the sub-folders of ``folder`` (hidden ones left out)."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not is_hidden(entry.name))


def list_image_files(folder: Path, *, where: str = "the tree") -> list[str]:
    """The image files of one class folder, sorted; a file that is not an image is an error."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    files = []
    for entry in entries:
        if is_hidden(entry.name):
            continue
        if not entry.is_file() or not entry.name.lower().endswith(IMAGE_SUFFIXES):
            raise DataError(
                f"{entry.path} is not an image file ({', '.join(IMAGE_SUFFIXES)}). A class folder "
                f"may hold only images: move it out of {where}."
            )
        files.append(entry.path)
    return files


def scan_class_folders(
    split_dir: Path,
    classes: Sequence[str],
    *,
    missing: Callable[[Path, str], str],
    empty: Callable[[Path, str], str],
    where: str = "the tree",
) -> tuple[list[str], list[int]]:
    """Paths and labels of ``split_dir/<class>/*`` for every class (label = its position in
    ``classes``). ``missing(folder, name)`` and ``empty(folder, name)`` word the errors."""
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            raise DataError(missing(folder, name))
        files = list_image_files(folder, where=where)
        if not files:
            raise DataError(empty(folder, name))
        paths += files
        labels += [label] * len(files)
    return paths, labels


def random_holdout(count: int, size: int, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held out): ``size`` of ``range(count)`` held out by a permutation seeded with
    ``seed``; both in their original order."""
    permutation = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return sorted(permutation[size:].tolist()), sorted(permutation[:size].tolist())


def stratified_split(
    labels: Sequence[int], fractions: dict[str, float], seed: int, *, class_names: Sequence[str], source: str
) -> dict[str, list[int]]:
    """Indices of ``labels`` per split: ``fractions`` ({split: fraction}) of each class, the
    rest under ``"train"``; each in original order.

    Per class, a split of fraction f > 0 gets round(f x n) images but at least one, so that
    every class is validated and tested; a class left with no training image is an error.
    The draw depends only on ``seed`` and the order of ``labels``.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = np.asarray(labels, dtype=np.int64)
    out: dict[str, list[int]] = {"train": [], **{split: [] for split in fractions}}
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels == label)
        order = members[torch.randperm(len(members), generator=generator).numpy()]
        start = 0
        for split, fraction in fractions.items():
            take = max(1, round(fraction * len(members))) if fraction > 0 else 0
            out[split] += order[start : start + take].tolist()
            start += take
        if start >= len(members):
            wanted = ", ".join(f"data.{split}_fraction={fraction}" for split, fraction in fractions.items())
            raise DataError(
                f"class {name!r} of {source} has {len(members)} image(s): too few to keep one for "
                f"training after {wanted} take theirs (at least one image each). Add images of "
                "this class, lower the fractions, or give the splits as folders (train/, val/, test/)."
            )
        out["train"] += order[start:].tolist()
    return {split: sorted(index) for split, index in out.items()}


class ImageFileDataModule(FastImagePath, ImageDataModule):
    """Base of the data modules that read image files: decoding, transforms and their knobs.

    in_chans: 3 (RGB) or 1 (grayscale); every image is converted to it.
    image_size: side of the training crop (RandomResizedCrop) and of the evaluation centre crop.
    eval_resize_size: side the shorter edge is resized to before the centre crop; None:
        ``image_size / 0.875`` (ResNet's 224-of-256 ratio).
    scale, ratio: RandomResizedCrop's ranges of the crop's area fraction and aspect ratio.
    flip: random horizontal flip.
    auto_augment: ``trivialaugment``, ``randaugment``, ``autoaugment`` (ImageNet policy) or None.
    random_erasing: probability of random erasing per training image (0: off).
    mean, std: per channel; None: ImageNet's (for one channel, the mean over its channels).
    pipeline, decode_on, fast_dct, format, shuffle_window: see ``FastImagePath``
        (``resnet_lab.data.fast_path``).
    """

    may_skip_samples = True

    def __init__(
        self,
        *,
        in_chans: int = 3,
        image_size: int = 224,
        eval_resize_size: int | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip: bool = True,
        auto_augment: str | None = None,
        random_erasing: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pipeline: str = "fast",
        decode_on: str = "workers",
        fast_dct: bool = False,
        format: str = "files",
        shuffle_window: int = 10_000,
        **options,
    ) -> None:
        if in_chans not in CHANNELS:
            raise ConfigError(f"data.in_chans must be 3 (RGB) or 1 (grayscale), got {in_chans!r}.")
        super().__init__(in_chans=in_chans, image_size=image_size, **options)
        if mean is None:
            mean = IMAGENET_MEAN if in_chans == 3 else (sum(IMAGENET_MEAN) / 3,)
        if std is None:
            std = IMAGENET_STD if in_chans == 3 else (sum(IMAGENET_STD) / 3,)
        self.transforms = ImageFileTransforms(
            image_size=image_size,
            eval_resize_size=eval_resize_size,
            scale=scale,
            ratio=ratio,
            flip=flip,
            auto_augment=auto_augment,
            random_erasing=random_erasing,
            mean=mean,
            std=std,
        )
        if len(self.transforms.mean) != in_chans:
            raise ConfigError(f"data.mean and data.std need {in_chans} value(s), one per channel; got {list(mean)}.")
        self.init_fast_path(
            pipeline=pipeline, decode_on=decode_on, fast_dct=fast_dct, format=format,
            shuffle_window=shuffle_window, mean=self.transforms.mean, std=self.transforms.std,
        )

    def eval_preprocessing(self) -> EvalPreprocessing:
        """``transforms.eval()``'s steps, as data (for checkpoints and exported files)."""
        t = self.transforms
        return EvalPreprocessing(in_chans=self.in_chans, resize_size=t.eval_resize_size, crop_size=t.image_size,
                                 mean=t.mean, std=t.std, crop_first=self.uses_fast_path)

    def image_dataset(self, paths: Sequence[str], labels: Sequence[int], *, train: bool) -> Dataset:
        if self.uses_fast_path:
            return self.file_dataset(paths, labels, train=train)
        transform = self.transforms.train() if train else self.transforms.eval()
        return ImageFileDataset(paths, labels, transform, self.image_size, self.in_chans)
