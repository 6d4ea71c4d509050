"""ImageNet-style JPEG trees restricted to a class subset, and fast.ai's Imagenette releases.

The tree is ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (the layout of
torchvision's ``ImageFolder`` and of the Imagenette archives). Class ``i`` is the ``i``-th
wnid of the subset in sorted order, as ``ImageFolder`` numbers them. The tree is checked
whole in ``setup`` (missing split folders, unknown wnids, empty class folders, files that are
not images) so that bad input fails before the first step; an image that does not decode
mid-epoch is skipped, counted and logged instead.

Images decode in DataLoader worker processes (``num_workers``) with torchvision's decoders.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2

from resnet_lab.data.archives import RemoteFile, extract_tar, fetch
from resnet_lab.data.base import UNREADABLE, ImageDataModule
from resnet_lab.data.imagenet_classes import class_name, resolve_subset
from resnet_lab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What torchvision's decode_image reads; any other file in a class folder is an error.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp")
# fast.ai's Imagenette archives, as torchvision.datasets.Imagenette lists them.
IMAGENETTE_RELEASES: dict[str, RemoteFile] = {
    "imagenette2": RemoteFile(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz", "fe2fc210e6bb7c5664d602c3cd71e612"
    ),
    "imagenette2-320": RemoteFile(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz", "3df6f0d01a2c9592104656642f5e78a3"
    ),
    "imagenette2-160": RemoteFile(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412"
    ),
}


class ImageFileDataset(Dataset):
    """(path, label) samples decoded to RGB uint8 tensors, then ``transform``ed.

    A file that does not decode yields a blank image and the label UNREADABLE, which the data
    module drops from the batch (and counts) after the transfer; the file is named in the log.
    """

    def __init__(self, paths: list[str], labels: list[int], transform, image_size: int) -> None:
        # NumPy arrays rather than lists of Python objects: fork-started workers then share
        # them without copy-on-write page faults from reference counting. UTF-8 bytes, not
        # NumPy's 4-byte-per-character str: 1.28 M ImageNet paths take ~0.1 GB, not ~0.5 GB.
        self.paths = np.array([path.encode() for path in paths], dtype=np.bytes_)
        self.labels = np.array(labels, dtype=np.int64)
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        path = self.paths[index].decode()
        try:
            image = decode_image(read_file(path), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError, ValueError) as error:
            log.warning("skipping %s: it does not decode as an image (%s)", path, error)
            return torch.zeros(3, self.image_size, self.image_size), UNREADABLE
        return self.transform(image), int(self.labels[index])


def _list_class_folder(folder: Path) -> list[str]:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    files = []
    for entry in entries:
        if entry.name.startswith("."):  # .DS_Store and other hidden files
            continue
        if not entry.is_file() or not entry.name.lower().endswith(IMAGE_SUFFIXES):
            raise DataError(
                f"{entry.path} is not an image file ({', '.join(IMAGE_SUFFIXES)}). A class folder "
                "may hold only images: move it out of the tree."
            )
        files.append(entry.path)
    return files


def scan_tree(tree: Path, wnids: tuple[str, ...], *, listed_in: str) -> dict[str, tuple[list[str], list[int]]]:
    """{split: (paths, labels)} of ``tree``'s train and val images of ``wnids``, fully checked."""
    samples = {}
    for split in ("train", "val"):
        paths: list[str] = []
        labels: list[int] = []
        for label, wnid in enumerate(wnids):
            folder = tree / split / wnid
            if not folder.is_dir():
                raise DataError(
                    f"unknown wnid {wnid} in {listed_in}: {folder} does not exist. Remove it from "
                    f"the list, or add its images to {tree / 'train'} and {tree / 'val'}."
                )
            files = _list_class_folder(folder)
            if not files:
                raise DataError(
                    f"{folder} holds no images. Add the images of class {wnid} or drop the class "
                    "from the subset."
                )
            paths += files
            labels += [label] * len(files)
        samples[split] = (paths, labels)
    return samples


class ImageNetSubsetDataModule(ImageDataModule):
    """An ImageNet-style tree restricted to ``subset``, or an Imagenette release.

    root: the folder that holds ``train/`` and ``val/`` (with ``release``: the folder the
        release's archive is downloaded to and extracted in, e.g. ``root/imagenette2-160``).
    subset: ``imagenette``, ``imagewoof``, ``imagenet100``, the path of a file with one wnid per
        line, or None for the first ``num_classes`` classes of the tree (in sorted order).
        ``num_classes`` must equal the subset's size.
    release: an Imagenette release (``imagenette2``, ``imagenette2-320``, ``imagenette2-160``)
        to download when ``download`` is set.
    image_size: side of the training crop (RandomResizedCrop) and of the evaluation centre crop.
    eval_resize_size: side the shorter edge is resized to before the centre crop; None:
        ``image_size / 0.875`` (ResNet's 224-of-256 ratio).
    min_scale: smallest fraction of the image area a training crop covers (0.08 in Inception
        and torchvision's ImageNet recipe; fast.ai use 0.35 for Imagenette).
    trivial_augment: apply TrivialAugmentWide after crop and flip.
    random_erasing: probability of random erasing per training image (0: off).
    val_size: training images held out for validation with ``split_seed``; 0: validate on
        ``val/``. The test set is always ``val/``.
    """

    may_skip_samples = True

    def __init__(
        self,
        *,
        root: str | Path,
        num_classes: int,
        subset: str | None = None,
        release: str | None = None,
        download: bool = False,
        in_chans: int = 3,
        image_size: int = 224,
        eval_resize_size: int | None = None,
        min_scale: float = 0.08,
        trivial_augment: bool = False,
        random_erasing: float = 0.0,
        val_size: int = 0,
        split_seed: int = 0,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        **options,
    ) -> None:
        wnids, listed_in = resolve_subset(subset)
        if wnids is not None and len(wnids) != num_classes:
            raise ConfigError(
                f"data.subset={subset} has {len(wnids)} classes but data.num_classes={num_classes}; "
                f"set data.num_classes={len(wnids)}."
            )
        if in_chans != 3:
            raise ConfigError(f"ImageNet images are decoded to RGB: data.in_chans must be 3, got {in_chans}.")
        if release is not None and release not in IMAGENETTE_RELEASES:
            raise ConfigError(
                f"data.release={release!r} is not an Imagenette release; choose one of "
                f"{', '.join(IMAGENETTE_RELEASES)} or null."
            )
        if not 0.0 < min_scale <= 1.0:
            raise ConfigError(f"data.min_scale is a fraction of the image area in (0, 1], got {min_scale}.")
        if not 0.0 <= random_erasing <= 1.0:
            raise ConfigError(f"data.random_erasing is a probability in [0, 1], got {random_erasing}.")
        if not isinstance(val_size, int) or val_size < 0:
            raise ConfigError(f"data.val_size must be an integer >= 0 (0: validate on val/), got {val_size!r}.")
        super().__init__(
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            classes=[class_name(wnid) for wnid in sorted(wnids)] if wnids else None,
            **options,
        )
        self.root = Path(root).expanduser()
        self.release = release
        self.download = download
        self.wnids = tuple(sorted(wnids)) if wnids else None
        self.listed_in = listed_in
        self.eval_resize_size = eval_resize_size or round(image_size / 0.875)
        if self.eval_resize_size < image_size:
            raise ConfigError(
                f"data.eval_resize_size={eval_resize_size} is smaller than data.image_size={image_size}; "
                "the centre crop must fit in the resized image."
            )
        self.min_scale = min_scale
        self.trivial_augment = trivial_augment
        self.random_erasing = random_erasing
        self.val_size = val_size
        self.split_seed = split_seed
        self.mean, self.std = tuple(mean), tuple(std)

    @property
    def tree(self) -> Path:
        return self.root / self.release if self.release else self.root

    def prepare_data(self) -> None:
        """Download and extract the Imagenette release if its tree is not there yet."""
        if self.release is None or ((self.tree / "train").is_dir() and (self.tree / "val").is_dir()):
            return
        archive = fetch(IMAGENETTE_RELEASES[self.release], self.root, download=self.download)
        extract_tar(archive, self.root)

    def train_transform(self) -> v2.Compose:
        steps = [
            v2.RandomResizedCrop(self.image_size, scale=(self.min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        if self.trivial_augment:
            steps.append(v2.TrivialAugmentWide())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        if self.random_erasing:
            steps.append(v2.RandomErasing(p=self.random_erasing))
        return v2.Compose(steps)

    def eval_transform(self) -> v2.Compose:
        return v2.Compose(
            [
                v2.Resize(self.eval_resize_size, antialias=True),
                v2.CenterCrop(self.image_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
            ]
        )

    def _class_folders(self) -> tuple[str, ...]:
        for split in ("train", "val"):
            if not (self.tree / split).is_dir():
                hint = (
                    " Set data.download=true to fetch the release." if self.release else
                    " ImageNet's official validation images come in one flat folder: sort them "
                    "into class folders first (e.g. with the valprep.sh script of the PyTorch "
                    "ImageNet example)."
                )
                raise DataError(
                    f"{self.tree} has no {split}/ folder; expected the layout "
                    f"{self.tree}/train/<wnid>/*.JPEG and {self.tree}/val/<wnid>/*.JPEG.{hint}"
                )
        if self.wnids is not None:
            return self.wnids
        folders = sorted(entry.name for entry in os.scandir(self.tree / "train") if entry.is_dir())
        if len(folders) < self.num_classes:
            raise DataError(
                f"{self.tree / 'train'} has {len(folders)} class folders, fewer than "
                f"data.num_classes={self.num_classes}. Lower data.num_classes or add classes."
            )
        return tuple(folders[: self.num_classes])

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        wnids = self._class_folders()
        self.wnids = wnids
        self.classes = [class_name(wnid) for wnid in wnids]
        samples = scan_tree(self.tree, wnids, listed_in=self.listed_in)
        paths, labels = samples["train"]
        if not self.val_size < len(paths):
            raise ConfigError(
                f"data.val_size={self.val_size} must be smaller than the {len(paths)} training "
                f"images of {self.tree / 'train'} in this subset."
            )
        permutation = torch.randperm(len(paths), generator=torch.Generator().manual_seed(self.split_seed))
        val_index = sorted(permutation[: self.val_size].tolist())
        train_index = sorted(permutation[self.val_size :].tolist())

        def dataset(index, source, transform) -> ImageFileDataset:
            return ImageFileDataset(
                [source[0][i] for i in index], [source[1][i] for i in index], transform, self.image_size
            )

        train_transform, eval_transform = self.train_transform(), self.eval_transform()
        self.train_set = dataset(train_index, samples["train"], train_transform)
        test_paths, test_labels = samples["val"]
        self.test_set = ImageFileDataset(test_paths, test_labels, eval_transform, self.image_size)
        self.val_set = dataset(val_index, samples["train"], eval_transform) if self.val_size else self.test_set
