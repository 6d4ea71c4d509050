"""Where the samples of ``data=folder`` come from: a folder of class folders, or a CSV index.

* ``FolderSource``: ``root/<class>/*`` (the folder names, sorted, are the classes), or
  ``root/train/<class>/*`` with ``root/val/`` and ``root/test/`` where present.
* ``IndexSource``: a CSV of ``path,label`` rows (optionally a third column ``split``: train,
  val or test; an optional header row names the columns), paths relative to the CSV's folder.
  The classes are the distinct labels of the training rows, sorted (numerically when every
  label is an integer).

Both check everything before training starts and answer the same two questions:
``classes()`` (cheap: folder names or the CSV's labels, for the ``folder_classes`` resolver
that gives the model its ``num_classes``) and ``samples(classes)`` ({split: (paths, labels)}
of the splits the data defines; the data module carves the others out of ``train``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from resnet_lab.data.image_files import (
    IMAGE_SUFFIXES,
    class_folder_names,
    is_hidden,
    scan_class_folders,
)
from resnet_lab.errors import ConfigError, DataError, UserError

SPLITS = ("train", "val", "test")
Samples = dict[str, tuple[list[str], list[int]]]


class FolderSource:
    """``root/<class>/*`` or ``root/{train,val,test}/<class>/*``; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if not root.is_dir():
            raise DataError(
                f"data.root={str(root)!r} {'is not a folder' if root.exists() else 'does not exist'}. Point it at "
                "a folder of class folders (DIR/<class>/*.jpg, or DIR/train/<class>/* with val/ and test/), "
                "or give a CSV index with data.index=FILE."
            )
        folders = class_folder_names(root)
        self.splits = [split for split in SPLITS if split in folders]
        others = [name for name in folders if name not in SPLITS]
        if self.splits and others:
            raise DataError(
                f"{root} holds split folders ({', '.join(f'{s}/' for s in self.splits)}) and other folders "
                f"({', '.join(f'{o}/' for o in others[:5])}). Put every class folder inside {root / 'train'} "
                "(and val/, test/), or remove the split folders to have the splits drawn."
            )
        if self.splits and "train" not in self.splits:
            raise DataError(
                f"{root} has {', '.join(f'{s}/' for s in self.splits)} but no train/ folder. Add "
                f"{root / 'train'}/<class>/ with the training images (the classes are its folders)."
            )
        for entry in os.scandir(root):
            if entry.is_file() and not is_hidden(entry.name) and entry.name.lower().endswith(IMAGE_SUFFIXES):
                raise DataError(
                    f"{entry.path} is an image outside any class folder. Move it into "
                    f"{(root / 'train') if self.splits else root}/<class>/, or out of {root}."
                )

    @property
    def class_root(self) -> Path:
        return self.root / "train" if self.splits else self.root

    def describe(self) -> str:
        return str(self.class_root)

    def classes(self) -> list[str]:
        return class_folder_names(self.class_root)

    def samples(self, classes: Sequence[str]) -> Samples:
        out: Samples = {}
        for split in self.splits or ["train"]:
            folder = self.root / split if self.splits else self.root
            extra = sorted(set(class_folder_names(folder)) - set(classes))
            if extra:
                raise DataError(
                    f"{folder / extra[0]} is a class folder that {self.class_root} lacks; the classes "
                    f"are the folders of {self.class_root}. Add training images of {extra[0]!r} "
                    f"there, or remove {folder / extra[0]}."
                )
            out[split] = scan_class_folders(
                folder,
                classes,
                missing=lambda path, name, split=split: (
                    f"{path} is missing: class {name!r} has training images but no {split}/ folder. "
                    f"Every split folder needs every class: add {path} with its {split} images, "
                    f"or remove {self.root / split} to have the {split} images drawn from train/."
                ),
                empty=lambda path, name: (
                    f"{path} holds no images. Add the images of class {name!r}, or remove the folder "
                    "(from every split) to drop the class."
                ),
                where=str(self.root),
            )
        return out


def _natural_sort(labels: set[str]) -> list[str]:
    if all(label.isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


class IndexSource:
    """A CSV index of ``path,label[,split]`` rows; see the module docstring."""

    def __init__(self, index: Path) -> None:
        self.index = index
        if not index.is_file():
            raise DataError(
                f"data.index={str(index)!r} {'is not a file' if index.exists() else 'does not exist'}. Give the "
                "path of a CSV file of path,label rows (paths relative to the CSV's folder)."
            )
        self.rows = self._read()
        self.splits = sorted({split for _, _, split, _ in self.rows}, key=SPLITS.index)
        if "train" not in self.splits:
            raise DataError(f"{index} has no training rows (split train, or no split column). Add them.")

    def _read(self) -> list[tuple[str, str, str, int]]:
        """(path, label, split, line number) of every row, the syntax checked."""
        try:
            with open(self.index, newline="", encoding="utf-8-sig") as file:
                lines = list(csv.reader(file))
        except (UnicodeDecodeError, csv.Error) as error:
            raise DataError(f"{self.index} is not a UTF-8 CSV file ({error}). Save it as CSV (UTF-8).") from None
        rows = []
        for number, cells in enumerate(lines, start=1):
            cells = [cell.strip() for cell in cells]
            if not any(cells):
                continue
            if number == 1 and [cell.lower() for cell in cells] in (["path", "label"], ["path", "label", "split"]):
                continue  # the header row
            if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
                raise DataError(
                    f"{self.index}, line {number}: {','.join(cells)!r} is not a path,label row (or "
                    "path,label,split); each row names an image file and its class. Fix the line."
                )
            split = cells[2].lower() if len(cells) == 3 else "train"
            if split not in SPLITS:
                raise DataError(
                    f"{self.index}, line {number}: split {cells[2]!r} is not one of {', '.join(SPLITS)}. Fix the line."
                )
            rows.append((cells[0], cells[1], split, number))
        if not rows:
            raise DataError(f"{self.index} lists no images. Add path,label rows (e.g. cats/001.jpg,cat).")
        return rows

    def describe(self) -> str:
        return str(self.index)

    def classes(self) -> list[str]:
        return _natural_sort({label for _, label, split, _ in self.rows if split == "train"})

    def samples(self, classes: Sequence[str]) -> Samples:
        number_of = {name: i for i, name in enumerate(classes)}
        base = self.index.parent
        seen: dict[str, int] = {}
        out: Samples = {split: ([], []) for split in self.splits}
        for path, label, split, number in self.rows:
            where = f"{self.index}, line {number}"
            if label not in number_of:
                raise DataError(
                    f"{where}: label {label!r} has no training row, so the model could not learn it. "
                    f"Add training rows of {label!r} or fix the label (known: {', '.join(classes[:10])}"
                    f"{', ...' if len(classes) > 10 else ''})."
                )
            full = (base / path).resolve()
            if not full.is_file():
                raise DataError(
                    f"{where}: {path} ({full}) {'is not a file' if full.exists() else 'does not exist'}. "
                    "Paths are relative to the CSV's folder: fix the path or remove the row."
                )
            if not full.name.lower().endswith(IMAGE_SUFFIXES):
                raise DataError(f"{where}: {path} is not an image file ({', '.join(IMAGE_SUFFIXES)}). Remove the row.")
            if str(full) in seen:
                raise DataError(f"{where}: {path} is listed twice (line {seen[str(full)]} too). Remove one of the rows.")
            seen[str(full)] = number
            out[split][0].append(str(full))
            out[split][1].append(number_of[label])
        for split, (_, labels) in out.items():
            missing = sorted(set(range(len(classes))) - set(labels))
            if missing:
                raise DataError(
                    f"{self.index}: class {classes[missing[0]]!r} has no {split} rows. Every split the "
                    f"index uses needs every class: add {split} rows of it, or give no {split} rows to "
                    "have that split drawn from the training rows."
                )
        return out


def open_source(root: str | Path | None, index: str | Path | None) -> FolderSource | IndexSource:
    if (root is None) == (index is None):
        raise ConfigError(
            "data=folder needs exactly one of data.root=DIR (a folder of class folders) and "
            f"data.index=FILE.csv (path,label rows); got root={root!r}, index={index!r}."
        )
    if index is not None:
        return IndexSource(Path(index).expanduser())
    return FolderSource(Path(root).expanduser())


def count_classes(root: str | None, index: str | None) -> int | None:
    """The number of classes of the folder or index, for the config's ``num_classes``; None
    when the source cannot be read (the data module then says why, naming the path)."""
    try:
        return len(open_source(root, index).classes()) or None
    except (UserError, OSError):
        return None
