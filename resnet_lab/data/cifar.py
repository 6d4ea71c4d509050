"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the official "python version" archives.

The archive, its checksum and the checksum of every batch file are torchvision's
(``torchvision.datasets.CIFAR10`` / ``CIFAR100``), and so is the layout under ``root``
(``root/cifar-10-batches-py/data_batch_1`` ...): a root torchvision downloaded to works here.
Each batch file is checked against its checksum before it is read, and read with an
unpickler that builds nothing but NumPy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity

from resnet_lab.data.archives import RemoteFile, extract_tar, fetch, verify_md5
from resnet_lab.data.base import require_shape
from resnet_lab.data.in_memory import InMemoryImageDataModule
from resnet_lab.errors import ConfigError, DataError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# The fine labels in the order of the archive's `meta` file (alphabetical).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trolleybus", "tulip", "turtle", "wardrobe",
    "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip


@dataclass(frozen=True)
class CifarRelease:
    """One CIFAR data set: where to get it, what its files hold, how to normalize it.

    train_files, test_files: (file name, MD5) of the batch files under ``folder``.
    mean, std: per-channel statistics of the 50,000 training images, pixel values in [0, 1].
    """

    archive: RemoteFile
    folder: str
    train_files: tuple[tuple[str, str], ...]
    test_files: tuple[tuple[str, str], ...]
    label_key: str
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _release(tv: type[CIFAR10], **fields) -> CifarRelease:
    return CifarRelease(
        archive=RemoteFile(tv.url, tv.tgz_md5),
        folder=tv.base_folder,
        train_files=tuple((name, md5) for name, md5 in tv.train_list),
        test_files=tuple((name, md5) for name, md5 in tv.test_list),
        **fields,
    )


# The normalization constants are the population mean and std over all pixels of the training
# set (the std often quoted for CIFAR-10, 0.2023 / 0.1994 / 0.2010, is a mean of per-image stds).
CIFAR_RELEASES: dict[str, CifarRelease] = {
    "cifar10": _release(
        CIFAR10,
        label_key="labels",
        classes=CIFAR10_CLASSES,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _release(
        CIFAR100,
        label_key="fine_labels",
        classes=CIFAR100_CLASSES,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and NumPy arrays; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, *, label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, 32, 32) images and int64 labels of one CIFAR python batch file."""
    how_to_fix = "Delete the folder it is in and let data.download=true fetch the archive again."
    try:
        with open(path, "rb") as file:
            batch = _ArraysOnlyUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as error:
        raise DataError(f"{path} is not a CIFAR batch file ({error}). {how_to_fix}") from error
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        raise DataError(f"{path} lacks the 'data' and '{label_key}' entries of a CIFAR batch file. {how_to_fix}")
    data, labels = batch["data"], np.asarray(batch[label_key])
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3 * 32 * 32
        and labels.shape == (len(data),)
        and np.issubdtype(labels.dtype, np.integer)
    ):
        raise DataError(
            f"{path} holds data of shape {getattr(data, 'shape', None)} and {labels.shape[0] if labels.ndim else 0} "
            f"labels; a CIFAR batch holds uint8 rows of 3072 pixels and one label per row. {how_to_fix}"
        )
    if len(labels) and not (labels.min() >= 0 and labels.max() < num_classes):
        raise DataError(
            f"{path} has labels from {labels.min()} to {labels.max()}, outside [0, {num_classes - 1}]. {how_to_fix}"
        )
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return images, torch.from_numpy(labels.astype(np.int64))


class CifarDataModule(InMemoryImageDataModule):
    """CIFAR-10 or CIFAR-100 (``release``), files under ``root`` or downloaded there.

    Validation is ``val_size`` training images chosen with ``split_seed``; test is the official
    test set. See ``InMemoryImageDataModule`` for the loader paths and augmentation options.
    """

    def __init__(
        self,
        *,
        release: str = "cifar10",
        root: str | Path,
        download: bool = True,
        num_classes: int = 10,
        in_chans: int = 3,
        image_size: int = 32,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        **options,
    ) -> None:
        if release not in CIFAR_RELEASES:
            raise ConfigError(f"data.release={release!r} is not a CIFAR release; choose one of {', '.join(CIFAR_RELEASES)}.")
        self.release = CIFAR_RELEASES[release]
        require_shape(release, (num_classes, in_chans, image_size), (len(self.release.classes), 3, 32))
        super().__init__(
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            classes=self.release.classes,
            mean=mean or self.release.mean,
            std=std or self.release.std,
            **options,
        )
        self.root = Path(root).expanduser()
        self.download = download
        archive = self.root / self.release.archive.filename
        missing = [path for path, _ in self._files() if not path.is_file()]
        if missing and not download and not archive.is_file():
            raise DataError(
                f"{missing[0]} does not exist, nor does the archive {archive}, and data.download "
                f"is false. Set data.download=true to fetch {self.release.archive.url}, or point "
                f"data.root at the folder that holds {self.release.folder}/."
            )

    @property
    def source(self) -> str:
        return str(self.root / self.release.folder)

    def _files(self) -> list[tuple[Path, str]]:
        folder = self.root / self.release.folder
        return [(folder / name, md5) for name, md5 in (*self.release.train_files, *self.release.test_files)]

    def prepare_data(self) -> None:
        """Extract the archive (downloading it if allowed) unless every batch file is intact."""
        if all(check_integrity(path, md5) for path, md5 in self._files()):
            return
        if not self.download and not (self.root / self.release.archive.filename).is_file():
            # The files are there (the constructor checked) but one does not match its
            # checksum, and there is no archive to extract again: name that file.
            self._verify_files()
        archive = fetch(self.release.archive, self.root, download=self.download)
        extract_tar(archive, self.root)
        self._verify_files()

    def _verify_files(self) -> None:
        for path, md5 in self._files():
            verify_md5(
                path,
                md5,
                how_to_fix=f"Delete {path.parent} and set data.download=true to extract "
                f"{self.release.archive.url} again.",
            )

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        files = self.release.train_files if train else self.release.test_files
        folder = self.root / self.release.folder
        parts = []
        for name, md5 in files:
            path = folder / name
            verify_md5(
                path,
                md5,
                how_to_fix=f"Delete {folder} and set data.download=true to extract "
                f"{self.release.archive.url} again.",
            )
            parts.append(read_cifar_batch(path, label_key=self.release.label_key, num_classes=self.num_classes))
        return torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])
