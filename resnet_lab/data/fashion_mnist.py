"""Fashion-MNIST (Xiao et al. 2017) from the official gzipped idx files.

The files are looked for, in order, in ``root``, in torchvision's layout under it
(``root/FashionMNIST/raw``), and in the system folders (``system_dirs``; by default where
Debian's ``dataset-fashion-mnist`` package installs them); if none holds all four, they are
downloaded into ``root`` when ``download`` is set. Each file is accepted if its MD5 is the
official ``.gz``'s or its uncompressed content's, and then parsed strictly.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import FashionMNIST

from resnet_lab.data.archives import RemoteFile, fetch
from resnet_lab.data.base import require_shape
from resnet_lab.data.in_memory import InMemoryImageDataModule
from resnet_lab.errors import DataError

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class IdxFile:
    """One idx file: its name without ``.gz``, the MD5 of the official ``.gz`` and of its content."""

    name: str
    gz_md5: str
    content_md5: str

    def remote(self, mirror: str) -> RemoteFile:
        return RemoteFile(f"{mirror}{self.name}.gz", self.gz_md5)


# .gz MD5s: torchvision's (the files of zalandoresearch's mirror). Content MD5s: of the
# uncompressed idx bytes, measured on Debian's dataset-fashion-mnist files, whose .gz
# wrappers were recompressed (their .gz MD5s differ from the mirror's).
_GZ_MD5 = dict(FashionMNIST.resources)
FASHION_MNIST_FILES: dict[str, IdxFile] = {
    name: IdxFile(name, _GZ_MD5[f"{name}.gz"], content_md5)
    for name, content_md5 in (
        ("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        ("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9"),
        ("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a"),
        ("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965"),
    )
}
MIRROR = FashionMNIST.mirrors[0]
# Mean and std of all pixels of the 60,000 training images, values in [0, 1].
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def parse_idx(content: bytes, *, path: Path, ndim: int) -> np.ndarray:
    """A uint8 array from idx bytes, refusing any header that does not match the byte count.

    torchvision's reader asserts (which ``python -O`` removes) and reads uncompressed files only.
    """
    how_to_fix = "Delete it; the data module then finds or downloads an intact copy."
    if len(content) < 4 + 4 * ndim:
        raise DataError(f"{path} is too short for an idx header ({len(content)} bytes). {how_to_fix}")
    zero, dtype, dims = struct.unpack(">HBB", content[:4])
    if zero != 0 or dtype != 0x08 or dims != ndim:
        raise DataError(
            f"{path} is not a {ndim}-dimensional uint8 idx file (magic {content[:4].hex()}). {how_to_fix}"
        )
    shape = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(content) != expected:
        raise DataError(
            f"{path} declares shape {shape} ({expected} bytes) but holds {len(content)} bytes: it "
            f"is truncated or padded. {how_to_fix}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class FashionMnistDataModule(InMemoryImageDataModule):
    """Fashion-MNIST: 60,000 training and 10,000 test images, 28x28 grayscale, 10 classes.

    Validation is ``val_size`` training images chosen with ``split_seed``. See
    ``InMemoryImageDataModule`` for the loader paths and augmentation options.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        download: bool = True,
        system_dirs: tuple[str, ...] | list[str] = (DEBIAN_DIR,),
        num_classes: int = 10,
        in_chans: int = 1,
        image_size: int = 28,
        mean: tuple[float, ...] = FASHION_MNIST_MEAN,
        std: tuple[float, ...] = FASHION_MNIST_STD,
        **options,
    ) -> None:
        require_shape("Fashion-MNIST", (num_classes, in_chans, image_size), (10, 1, 28))
        super().__init__(
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            classes=FashionMNIST.classes,
            mean=mean,
            std=std,
            **options,
        )
        self.root = Path(root).expanduser()
        self.download = download
        self.system_dirs = [Path(folder) for folder in system_dirs]
        self.files = FASHION_MNIST_FILES
        if not download and self.find_folder() is None:
            raise DataError(self._missing_message())

    @property
    def candidate_dirs(self) -> list[Path]:
        return [self.root, self.root / "FashionMNIST" / "raw", *self.system_dirs]

    @property
    def source(self) -> str:
        return str(self.find_folder() or self.root)

    def _present(self, folder: Path, file: IdxFile) -> Path | None:
        for name in (f"{file.name}.gz", file.name):
            if (folder / name).is_file():
                return folder / name
        return None

    def find_folder(self) -> Path | None:
        """The first candidate folder that holds all four files, gzipped or not."""
        for folder in self.candidate_dirs:
            if all(self._present(folder, file) for file in self.files.values()):
                return folder
        return None

    def _missing_message(self) -> str:
        looked = ", ".join(str(folder) for folder in self.candidate_dirs)
        names = ", ".join(f"{name}.gz" for name in self.files)
        return (
            f"Fashion-MNIST's files ({names}) are not in any of {looked}, and data.download is "
            f"false. Set data.download=true to fetch them from {MIRROR} into {self.root}, install "
            "them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or point data.root "
            "at the folder that holds them."
        )

    def prepare_data(self) -> None:
        if self.find_folder() is not None:
            return
        if not self.download:
            raise DataError(self._missing_message())
        for file in self.files.values():
            fetch(file.remote(MIRROR), self.root, download=True)

    def read(self, folder: Path, file: IdxFile) -> tuple[Path, bytes]:
        """The path and the verified uncompressed bytes of ``file`` in ``folder``."""
        path = self._present(folder, file)
        if path is None:
            raise DataError(self._missing_message())
        raw = path.read_bytes()
        if path.suffix == ".gz":
            if hashlib.md5(raw, usedforsecurity=False).hexdigest() == file.gz_md5:
                return path, gzip.decompress(raw)
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as error:
                raise DataError(
                    f"{path} is not a readable gzip file ({error}): a partial download or another "
                    "file. Delete it; the data module then finds or downloads an intact copy."
                ) from error
        actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        if actual != file.content_md5:
            raise DataError(
                f"{path} does not hold the official {file.name}: the MD5 of its content is {actual}, "
                f"not {file.content_md5}. It is corrupt or another file; delete it, and the data "
                "module then finds or downloads an intact copy."
            )
        return path, raw

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.find_folder()
        if folder is None:
            raise DataError(self._missing_message())
        prefix = "train" if train else "t10k"
        image_file = self.files[f"{prefix}-images-idx3-ubyte"]
        label_file = self.files[f"{prefix}-labels-idx1-ubyte"]
        image_path, image_bytes = self.read(folder, image_file)
        label_path, label_bytes = self.read(folder, label_file)
        images = parse_idx(image_bytes, path=image_path, ndim=3)
        labels = parse_idx(label_bytes, path=label_path, ndim=1)
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise DataError(
                f"{folder} holds {len(images)} images of {images.shape[1:]} pixels and {len(labels)} "
                f"labels for the {prefix} split; expected one label per 28x28 image. Delete the "
                "files; the data module then finds or downloads an intact copy."
            )
        if len(labels) and labels.max() >= self.num_classes:
            raise DataError(
                f"{label_path} has label {labels.max()}, outside [0, 9]. Delete the "
                "files; the data module then finds or downloads an intact copy."
            )
        images = torch.from_numpy(images.copy()).unsqueeze(1)
        return images, torch.from_numpy(labels.astype(np.int64))
