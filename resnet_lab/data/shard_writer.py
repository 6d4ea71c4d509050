"""``python -m resnet_lab.data.shard_writer``: write WebDataset tar shards from a folder or ImageNet tree.

The source is an ImageNet-style tree (``source/train/<class>/*``, ``source/val/<class>/*``,
optionally ``source/test/``) or one folder of class folders (``source/<class>/*``, written
as the split ``train``). Every split present is written to ``output/<split>-NNNNNN.tar``
with ``output/<split>.json`` (see ``resnet_lab.data.shards``). The samples of a split are
shuffled once (``--seed``) before they are cut into shards, so that every shard holds a mix
of classes; image files are copied byte for byte (no re-encoding).

Nothing is overwritten unless ``--overwrite``: a shard is written as ``.partial`` and renamed
when complete, and the index is written last, so an interrupted run leaves no index that
lists a partial shard.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np

from resnet_lab.data.shards import INDEX_KIND, index_path
from resnet_lab.errors import ConfigError, DataError, UserError

SPLITS = ("train", "val", "test")
SOURCE_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp"}


def class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted; anything else in it is an error."""
    files = []
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_file() or Path(entry.name).suffix.lower() not in SOURCE_SUFFIXES:
            raise DataError(
                f"{entry.path} is not an image file ({', '.join(SOURCE_SUFFIXES)}); a class folder may "
                "hold only images: move it out of the tree."
            )
        files.append(Path(entry.path))
    return files


def find_splits(source: Path) -> dict[str, Path]:
    """{split: folder of class folders}: the split folders of an ImageNet-style tree, else the
    source itself as ``train``."""
    if not source.is_dir():
        raise ConfigError(f"--source {source} is not a folder; give an ImageNet-style tree or a folder of class folders.")
    present = {split: source / split for split in SPLITS if (source / split).is_dir()}
    if present and "train" not in present:
        raise DataError(f"{source} has {', '.join(f'{s}/' for s in present)} but no train/ folder, whose class folders name the classes.")
    return present or {"train": source}


def samples_of(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        if not (folder / name).is_dir():
            raise DataError(f"{folder / name} does not exist: every split needs a folder for each class of train/ ({name}).")
        files = image_files(folder / name)
        if not files:
            raise DataError(f"{folder / name} holds no images; add some or remove the class from every split.")
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444  # same bytes from the same input
    tar.addfile(info, io.BytesIO(data))


def write_split(paths: list[Path], labels: list[int], classes: list[str], output: Path, split: str, *, shard_size: int, seed: int) -> dict:
    """Write one split's shards and index; returns the index."""
    order = np.random.default_rng(seed).permutation(len(paths))
    shardlist = []
    for number, start in enumerate(range(0, len(order), shard_size)):
        url = f"{split}-{number:06d}.tar"
        partial = output / f"{url}.partial"
        chosen = order[start : start + shard_size]
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for position in chosen.tolist():
                key = f"{split}-{position:08d}"
                _member(tar, f"{key}.{SOURCE_SUFFIXES[paths[position].suffix.lower()]}", paths[position].read_bytes())
                _member(tar, f"{key}.cls", str(labels[position]).encode())
        os.replace(partial, output / url)
        shardlist.append({"url": url, "nsamples": len(chosen)})
    index = {"__kind__": INDEX_KIND, "wids_version": 1, "name": split, "classes": classes, "shardlist": shardlist}
    temporary = output / f".{split}.json.partial"
    temporary.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(temporary, index_path(output, split))
    return index


def write_shards(source: Path, output: Path, *, shard_size: int = 1000, seed: int = 0, classes: list[str] | None = None, overwrite: bool = False) -> dict[str, dict]:
    """Write every split of ``source`` as shards under ``output``; returns {split: index}.

    classes: the classes to write, in label order (default: every class folder of train/).
    """
    if shard_size < 1:
        raise ConfigError(f"--shard-size must be a positive number of samples, got {shard_size}.")
    splits = find_splits(source)
    classes = classes or class_folders(splits["train"])
    if not classes:
        raise DataError(f"{splits['train']} has no class folders; expected {splits['train']}/<class>/<image files>.")
    if output.exists() and not overwrite:
        taken = [path.name for split in splits for path in [index_path(output, split), *output.glob(f"{split}-*.tar")] if path.exists()]
        if taken:
            raise ConfigError(f"--output {output} already holds {', '.join(sorted(taken)[:3])}...; choose another folder or pass --overwrite.")
    # Every split is listed and checked before the first byte is written.
    listed = {split: samples_of(folder, classes) for split, folder in splits.items()}
    output.mkdir(parents=True, exist_ok=True)
    return {
        split: write_split(paths, labels, classes, output, split, shard_size=shard_size, seed=seed)
        for split, (paths, labels) in listed.items()
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resnet_lab.data.shard_writer", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, required=True, help="an ImageNet-style tree (train/, val/, test/) or a folder of class folders")
    p.add_argument("--output", type=Path, required=True, help="folder for the shards and their <split>.json indexes")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (ImageNet: ~110 MB shards)")
    p.add_argument("--subset", default=None, help="write only these classes: imagenette, imagewoof, imagenet100 or a file of wnids")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle before sharding")
    p.add_argument("--overwrite", action="store_true", help="replace shards and indexes already in --output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        classes = None
        if args.subset is not None:
            from resnet_lab.data.imagenet_classes import resolve_subset

            wnids, _ = resolve_subset(args.subset)
            classes = sorted(wnids)
        indexes = write_shards(args.source, args.output, shard_size=args.shard_size, seed=args.seed, classes=classes, overwrite=args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, index in indexes.items():
        total = sum(entry["nsamples"] for entry in index["shardlist"])
        print(f"{split}: {total} samples of {len(index['classes'])} classes in {len(index['shardlist'])} shards -> {index_path(args.output, split)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
