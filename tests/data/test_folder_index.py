"""data=folder with data.index: a CSV of path,label[,split] rows instead of class folders."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.data import FolderDataModule
from resnet_lab.errors import DataError
from tests.helpers import compose_config
from tests.helpers.fakes import write_photo_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Class folders whose names the CSVs do not use: the labels come from the rows."""
    return write_photo_folder(tmp_path_factory.mktemp("data") / "images", per_class=5)


def rows(images, *, split=None, label_of=None) -> list[str]:
    label_of = label_of or {"china": "temple", "flower": "flower", "noise": "static"}
    lines = []
    for folder in sorted(images.iterdir()):
        for i, path in enumerate(sorted(folder.iterdir())):
            cells = [f"images/{folder.name}/{path.name}", label_of[folder.name]]
            if split:
                cells.append(split(i))
            lines.append(",".join(cells))
    return lines


def write_index(images, lines, name="index.csv"):
    path = images.parent / name
    path.write_text("\n".join(lines) + "\n")
    return path


def make(index, **options) -> FolderDataModule:
    options = {"image_size": 16, "batch_size": 4, "eval_batch_size": 4, "num_workers": 0, **options}
    return FolderDataModule(index=index, **options)


def test_rows_with_a_header_and_splits_drawn(images):
    index = write_index(images, ["path,label", *rows(images)])
    data = make(index)
    assert data.classes == ["flower", "static", "temple"]
    data.setup("fit")
    assert [len(data.train_set), len(data.val_set), len(data.test_set)] == [9, 3, 3]
    assert data.class_counts() == [3, 3, 3]
    paths = [path.decode() for path in data.train_set.paths]
    assert all(path.startswith(str(images)) for path in paths)  # relative to the CSV's folder
    labels_of = {path.split("/")[-2]: int(label) for path, label in zip(paths, data.train_set.labels)}
    assert labels_of == {"flower": 0, "noise": 1, "china": 2}  # the labels' order, not the folders'
    images_, labels = next(iter(data.train_dataloader()))
    assert images_.shape == (4, 3, 16, 16) and labels.dtype == torch.int64


def test_rows_without_a_header_with_a_split_column(images):
    split = {0: "val", 1: "test"}
    index = write_index(images, rows(images, split=lambda i: split.get(i, "train")), "split.csv")
    data = make(index)
    data.setup("fit")
    assert [len(data.train_set), len(data.val_set), len(data.test_set)] == [9, 3, 3]
    assert all(b"_000." in path for path in data.val_set.paths)


def test_integer_labels_sort_as_numbers(images):
    labels = {"china": "10", "flower": "2", "noise": "9"}
    data = make(write_index(images, rows(images, label_of=labels), "numbers.csv"))
    assert data.classes == ["2", "9", "10"]


def test_the_config_counts_the_index_labels(images, tmp_path):
    index = write_index(images, rows(images))
    cfg = compose_config(["data=folder", f"data.index={index}"], run_dir=tmp_path / "run")
    assert cfg.data.num_classes == cfg.model.num_classes == 3


# Bad input: each a DataError naming the file, the line and the fix.


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: [*lines, "images/china/missing.png,temple"],
         r"index.csv, line 16: images/china/missing.png \(.*\) does not exist. Paths are relative to the CSV's folder"),
        (lambda lines: [*lines, "images/china/china_000.jpg,temple"],
         r"line 16: images/china/china_000.jpg is listed twice \(line 1 too\)"),
        (lambda lines: [*lines, "index.csv,temple"], r"line 16: index.csv is not an image file"),
        (lambda lines: [*lines, "images/china/china_000.jpg"], r"line 16: 'images/china/china_000.jpg' is not a path,label row"),
        (lambda lines: [*lines, "images/china/china_000.jpg,"], r"line 16: .* is not a path,label row"),
        (lambda lines: [line + ",train" for line in lines[:-1]] + [lines[-1] + ",validation"],
         r"line 15: split 'validation' is not one of train, val, test"),
        (lambda lines: [line + ",train" for line in lines[:-1]] + [lines[-1].replace("static", "owl") + ",test"],
         r"line 15: label 'owl' has no training row, so the model could not learn it"),
        (lambda lines: [line + (",val" if i in (0, 5) else ",train") for i, line in enumerate(lines)],
         r"class 'static' has no val rows. Every split the index uses needs every class"),
        (lambda lines: [line + ",test" for line in lines], "has no training rows"),
        (lambda lines: ["path,label"], "lists no images"),
    ],
    ids=["missing path", "listed twice", "not an image", "one column", "empty label", "unknown split",
         "unknown label", "class missing from a split", "no training rows", "empty"],
)
def test_bad_rows(images, edit, message):
    index = write_index(images, edit(rows(images)))
    with pytest.raises(DataError, match=message):
        make(index).setup("fit")


def test_a_missing_or_undecodable_index_file(images, tmp_path):
    with pytest.raises(DataError, match=r"data.index='.*nothing.csv' does not exist"):
        make(tmp_path / "nothing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(DataError, match="binary.csv is not a UTF-8 CSV file"):
        make(binary)
