"""Small data sets written in the real on-disk formats, for tests and offline demonstrations.

Each writer produces files the data modules read exactly as they read the official ones
(CIFAR python pickles and their tar.gz archive, gzipped idx files, an ImageNet-style JPEG
tree), plus the checksums to register them under, since the official checksums cannot match.
Pixel values are random but labelled: image ``i`` has label ``labels[i]``.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.utils import calculate_md5
from torchvision.io import encode_jpeg

from resnet_lab.data.archives import RemoteFile
from resnet_lab.data.cifar import CIFAR_RELEASES, CifarRelease


def _random_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_cifar(
    root: Path,
    release: str = "cifar10",
    *,
    train_per_file: int = 40,
    test_size: int = 40,
    seed: int = 0,
    archive: bool = True,
) -> CifarRelease:
    """Write a small CIFAR release under ``root`` (its batch files and, if asked, its tar.gz).

    Returns the release with the checksums of these files and a ``file://`` URL for the
    archive, to register in ``CIFAR_RELEASES`` in place of the official one.
    """
    official = CIFAR_RELEASES[release]
    rng = np.random.default_rng(seed)
    folder = root / official.folder
    folder.mkdir(parents=True, exist_ok=True)
    num_classes = len(official.classes)

    def write(name: str, n: int) -> tuple[str, str]:
        labels = rng.integers(0, num_classes, size=n).tolist()
        batch = {
            "batch_label": f"fake {name}",
            official.label_key: labels,
            "data": _random_images(rng, n, (3 * 32 * 32,)),
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as file:
            pickle.dump(batch, file, protocol=2)  # the official files are Python 2 pickles
        return name, calculate_md5(folder / name)

    train = tuple(write(name, train_per_file) for name, _ in official.train_files)
    test = tuple(write(name, test_size) for name, _ in official.test_files)
    remote = official.archive
    if archive:
        path = root / official.archive.filename
        with tarfile.open(path, "w:gz") as tar:
            tar.add(folder, arcname=official.folder)
        remote = RemoteFile(path.resolve().as_uri(), calculate_md5(path))
    return dataclasses.replace(official, archive=remote, train_files=train, test_files=test)


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array (LeCun's MNIST format: magic, sizes, big-endian)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist(
    folder: Path, *, train_size: int = 200, test_size: int = 100, seed: int = 0
) -> dict[str, str]:
    """Write the four gzipped idx files of a small Fashion-MNIST into ``folder``.

    Returns {file name: MD5 of the uncompressed idx bytes}, to register as content checksums.
    """
    import hashlib

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for prefix, n in (("train", train_size), ("t10k", test_size)):
        arrays = {
            f"{prefix}-images-idx3-ubyte": _random_images(rng, n, (28, 28)),
            f"{prefix}-labels-idx1-ubyte": rng.integers(0, 10, size=n).astype(np.uint8),
        }
        for name, array in arrays.items():
            content = idx_bytes(array)
            with gzip.open(folder / f"{name}.gz", "wb") as file:
                file.write(content)
            checksums[name] = hashlib.md5(content).hexdigest()
    return checksums


def jpeg_bytes(image: np.ndarray) -> bytes:
    """JPEG encoding of a uint8 (H, W, 3) image."""
    return encode_jpeg(torch.from_numpy(image).permute(2, 0, 1).contiguous(), quality=90).numpy().tobytes()


def write_image_tree(
    root: Path,
    wnids: list[str] | tuple[str, ...],
    *,
    train_per_class: int = 4,
    val_per_class: int = 2,
    size: tuple[int, int] = (40, 48),
    seed: int = 0,
) -> Path:
    """Write an ImageNet-style tree ``root/{train,val}/<wnid>/*.JPEG`` of small random JPEGs."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for wnid in wnids:
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (folder / f"{wnid}_{i}.JPEG").write_bytes(jpeg_bytes(_random_images(rng, 1, (*size, 3))[0]))
    return root


def tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    """Write a tar.gz holding ``members`` ({name in the archive: bytes})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's two real photographs (china.jpg, flower.jpg): uint8 (427, 640, 3)."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(image) for image in load_sample_images().images]


def photo_crops(count: int, *, size: tuple[int, int] = (48, 40), seed: int = 0, photo: int | None = None) -> list[np.ndarray]:
    """``count`` random crops of the real photographs, resized to ``size`` (width, height):
    uint8 (height, width, 3). ``photo`` picks one of the two; None alternates."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = sample_photos()
    crops = []
    for i in range(count):
        source = photos[photo if photo is not None else i % len(photos)]
        side = int(rng.integers(120, 400))
        top = int(rng.integers(0, source.shape[0] - side + 1))
        left = int(rng.integers(0, source.shape[1] - side + 1))
        crop = Image.fromarray(source[top : top + side, left : left + side]).resize(size, Image.BILINEAR)
        crops.append(np.asarray(crop))
    return crops


def save_image(path: Path, rgb: np.ndarray, mode: str = "RGB") -> Path:
    """Save a uint8 (H, W, 3) image in Pillow ``mode`` (RGB, L, RGBA, P, LA, I;16, 1, CMYK) in
    the format of ``path``'s suffix (JPEG, PNG, WebP, BMP)."""
    from PIL import Image

    image = Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None, :].repeat(rgb.shape[0], 0)
        image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)  # 16-bit grey
    elif mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **({"lossless": True} if path.suffix.lower() == ".webp" else {}))
    return path


# Formats and Pillow modes a folder of your own images may hold (JPEG has no alpha or palette).
IMAGE_FORMATS = (".jpg", ".png", ".webp", ".bmp")
IMAGE_MODES = ("RGB", "L", "RGBA", "P", "1", "I;16")


def format_mode_pairs() -> list[tuple[str, str]]:
    return [
        (suffix, mode)
        for mode in IMAGE_MODES
        for suffix in IMAGE_FORMATS
        if not (suffix == ".jpg" and mode in ("RGBA", "P", "I;16")) and not (mode == "I;16" and suffix != ".png")
    ]


def write_photo_folder(
    root: Path, *, per_class: int = 6, size: tuple[int, int] = (24, 20), seed: int = 0, offset: int = 0
) -> Path:
    """Class folders ``root/<class>/`` of images in every format and mode: ``china`` and
    ``flower`` hold crops of scikit-learn's two photographs, ``noise`` generated images.
    ``offset`` shifts the format/mode cycle and the file names (for another split)."""
    rng = np.random.default_rng(seed)
    pairs = format_mode_pairs()
    for label, name in enumerate(("china", "flower", "noise")):
        if name == "noise":
            images = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(per_class)]
        else:
            images = photo_crops(per_class, size=size, seed=seed + label, photo=label)
        for i, image in enumerate(images):
            suffix, mode = pairs[(offset + label * per_class + i) % len(pairs)]
            save_image(root / name / f"{name}_{offset + i:03d}{suffix}", image, mode)
    return root
