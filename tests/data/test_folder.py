"""data=folder: class folders of your own images, with and without split folders.

The folders hold crops of scikit-learn's two real photographs and generated images, in every
format (JPEG, PNG, WebP, BMP) and mode (RGB, L, RGBA, P, 1, 16-bit) the module accepts.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from resnet_lab.data import FolderDataModule
from resnet_lab.errors import ConfigError, DataError
from tests.helpers import compose_config, run_cli, run_dirs
from tests.helpers.fakes import photo_crops, save_image, write_photo_folder

CLASSES = ["china", "flower", "noise"]
PER_CLASS = 7  # 21 images: every format x mode pair at least once


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    return write_photo_folder(tmp_path_factory.mktemp("flat"), per_class=PER_CLASS)


def make(root=None, **options) -> FolderDataModule:
    options = {"image_size": 16, "batch_size": 4, "eval_batch_size": 4, "num_workers": 0, **options}
    return FolderDataModule(root=root, **options)


def formats_and_modes(paths) -> set[tuple[str, str]]:
    found = set()
    for path in paths:
        with Image.open(path) as image:
            found.add((path.rsplit(".", 1)[1], image.mode))
    return found


def test_a_flat_folder_of_every_format_and_mode_is_split_by_class(flat):
    data = make(flat)
    assert data.classes == CLASSES and data.num_classes == 3  # known before setup
    data.setup("fit")
    sizes = [len(data.train_set), len(data.val_set), len(data.test_set)]
    assert sizes == [15, 3, 3]  # one of seven per class each for val and test (10 % rounds up to one)
    counts = [np.bincount(s.labels, minlength=3).tolist() for s in (data.train_set, data.val_set, data.test_set)]
    assert counts == [[5, 5, 5], [1, 1, 1], [1, 1, 1]]
    every = [p.decode() for dataset in (data.train_set, data.val_set, data.test_set) for p in dataset.paths]
    assert len(set(every)) == 21
    # As stored (WebP keeps RGB or RGBA, JPEG stores 1-bit as L).
    assert formats_and_modes(every) >= {
        ("jpg", "RGB"), ("jpg", "L"), ("png", "RGBA"), ("png", "P"), ("png", "1"), ("png", "I;16"),
        ("webp", "RGBA"), ("webp", "RGB"), ("bmp", "P"), ("bmp", "L"), ("bmp", "1"), ("bmp", "RGB"),
    }
    assert data.class_counts() == [5, 5, 5]
    # uint8 from the workers; float32 after the transfer hook, as the network gets them.
    images, labels = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32 and labels.max() < 3
    images, labels = next(iter(data.test_dataloader()))
    assert images.shape == (3, 3, 16, 16) and labels.tolist() == [0, 1, 2]


def test_every_image_decodes_to_the_asked_channels(flat):
    for in_chans in (3, 1):
        data = make(flat, in_chans=in_chans)
        data.setup("fit")
        for dataset in (data.train_set, data.test_set):
            for index in range(len(dataset)):
                image, label = dataset[index]
                assert label >= 0 and image.shape == (in_chans, 16, 16)
    assert make(flat, in_chans=1).transforms.mean == (pytest.approx(0.449),)


def test_the_drawn_split_depends_on_split_seed_only(flat):
    def split_of(**options):
        data = make(flat, **options)
        data.setup("fit")
        return [sorted(p.decode() for p in s.paths) for s in (data.train_set, data.val_set, data.test_set)]

    first = split_of(seed=1)
    assert split_of(seed=2) == first  # the run's seed does not move images between splits
    assert split_of(split_seed=5) != first


def test_split_folders_are_used_where_present(tmp_path):
    write_photo_folder(tmp_path / "train", per_class=5)
    write_photo_folder(tmp_path / "val", per_class=2, offset=10, seed=1)
    data = make(tmp_path)
    data.setup("fit")
    assert data.classes == CLASSES
    assert len(data.val_set) == 6 and all(b"/val/" in p for p in data.val_set.paths)
    assert len(data.test_set) == 3 and len(data.train_set) == 12  # test drawn from train/
    write_photo_folder(tmp_path / "test", per_class=2, offset=20, seed=2)
    data = make(tmp_path)
    data.setup("fit")
    assert [len(data.train_set), len(data.val_set), len(data.test_set)] == [15, 6, 6]
    assert all(b"/test/" in p for p in data.test_set.paths)


def test_an_unreadable_image_is_skipped_counted_and_named(tmp_path, caplog):
    write_photo_folder(tmp_path / "train", per_class=3)
    write_photo_folder(tmp_path / "val", per_class=1, offset=10)
    write_photo_folder(tmp_path / "test", per_class=1, offset=20)
    broken = tmp_path / "train" / "flower" / "flower_broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = make(tmp_path, batch_size=10)
    data.setup("fit")
    assert len(data.train_set) == 10  # the file passes the checks (its name is an image's)
    with caplog.at_level(logging.WARNING):
        (batch,) = list(data.train_dataloader())
        images, labels = data.on_after_batch_transfer(batch, 0)
    assert len(labels) == 9 and (labels >= 0).all() and images.shape == (9, 3, 16, 16)
    assert data.skipped_samples == 1
    assert any(str(broken) in record.getMessage() for record in caplog.records)


# Bad input: each a DataError / ConfigError naming the path and the fix, before training.


def test_missing_root_or_index(tmp_path):
    with pytest.raises(DataError, match=r"data.root='.*nowhere' does not exist. Point it at a folder of class folders"):
        make(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="needs exactly one of data.root=DIR .* and data.index=FILE.csv"):
        make(None)
    with pytest.raises(ConfigError, match="needs exactly one of"):
        make(tmp_path, index=tmp_path / "index.csv")


def test_empty_class_folder(tmp_path):
    root = write_photo_folder(tmp_path, per_class=3)
    shutil.rmtree(root / "noise")
    (root / "noise").mkdir()
    with pytest.raises(DataError, match=r"noise holds no images. Add the images of class 'noise', or remove the folder"):
        make(root).setup("fit")


def test_a_file_that_is_not_an_image(tmp_path):
    root = write_photo_folder(tmp_path, per_class=3)
    (root / "china" / "notes.txt").write_text("taken in 2019")
    (root / "flower" / ".DS_Store").write_bytes(b"hidden files are ignored")
    with pytest.raises(DataError, match=r"china/notes.txt is not an image file .* move it out of"):
        make(root).setup("fit")


def test_an_image_outside_the_class_folders(tmp_path):
    root = write_photo_folder(tmp_path, per_class=3)
    save_image(root / "stray.jpg", photo_crops(1)[0])
    with pytest.raises(DataError, match=r"stray.jpg is an image outside any class folder. Move it into .*/<class>/"):
        make(root)


def test_a_class_missing_from_a_split_folder(tmp_path):
    write_photo_folder(tmp_path / "train", per_class=3)
    write_photo_folder(tmp_path / "val", per_class=1, offset=10)
    shutil.rmtree(tmp_path / "val" / "flower")
    with pytest.raises(DataError, match=r"val/flower is missing: class 'flower' has training images but no val/ folder"):
        make(tmp_path).setup("fit")


def test_a_class_only_in_a_later_split(tmp_path):
    write_photo_folder(tmp_path / "train", per_class=3)
    write_photo_folder(tmp_path / "test", per_class=1, offset=10)
    save_image(tmp_path / "test" / "zebra" / "z.png", photo_crops(1)[0])
    with pytest.raises(DataError, match=r"test/zebra is a class folder that .*train lacks"):
        make(tmp_path).setup("fit")


def test_split_folders_mixed_with_class_folders_or_without_train(tmp_path):
    write_photo_folder(tmp_path / "a", per_class=2)
    write_photo_folder(tmp_path / "a" / "val", per_class=1)
    with pytest.raises(DataError, match=r"holds split folders \(val/\) and other folders \(china/, flower/, noise/\)"):
        make(tmp_path / "a")
    write_photo_folder(tmp_path / "b" / "val", per_class=1)
    with pytest.raises(DataError, match=r"has val/ but no train/ folder"):
        make(tmp_path / "b")


def test_one_class_is_not_a_classification(tmp_path):
    save_image(tmp_path / "cats" / "1.png", photo_crops(1)[0])
    with pytest.raises(DataError, match="holds 1 class: cats; a classifier needs at least two"):
        make(tmp_path)


def test_too_few_images_to_draw_the_splits(tmp_path):
    root = write_photo_folder(tmp_path, per_class=3)
    for path in list((root / "noise").iterdir())[1:]:
        path.unlink()
    with pytest.raises(DataError, match=r"class 'noise' of .* has 1 image\(s\): too few to keep one for training"):
        make(root).setup("fit")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_classes": 5}, r"data.num_classes=5, but .* holds 3 classes \(china, flower, noise\). Remove the override"),
        ({"val_fraction": 1.2}, r"data.val_fraction is a fraction of each class's images in \[0, 1\), got 1.2"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "leaves no training images"),
        ({"in_chans": 4}, "data.in_chans must be 3 .* or 1"),
        ({"mean": (0.5,), "std": (0.2,)}, r"data.mean and data.std need 3 value\(s\), one per channel"),
        ({"mean": (0.5,)}, r"data.mean and data.std need one value per channel and std > 0"),
        ({"balanced_sampler": "yes"}, "data.balanced_sampler must be true or false"),
    ],
)
def test_bad_config_values(flat, options, message):
    with pytest.raises(ConfigError, match=message):
        make(flat, **options)


def test_a_fraction_of_zero_needs_a_split_of_the_data(flat):
    with pytest.raises(ConfigError, match=r"data.test_fraction=0, but .* has no test split"):
        make(flat, test_fraction=0).setup("fit")


# The config: num_classes is counted from the data, so the model gets it by interpolation.


def test_the_config_counts_the_classes_for_the_model(flat, tmp_path):
    cfg = compose_config(["data=folder", f"data.root={flat}", "data.num_workers=0"], run_dir=tmp_path / "run")
    assert cfg.data.num_classes == cfg.model.num_classes == cfg.module.num_classes == 3
    data = instantiate(cfg.data)
    assert data.classes == CLASSES and data.image_size == 224 and data.transforms.auto_augment == "trivialaugment"


def test_the_config_of_a_missing_folder_fails_in_the_data_module_naming_it(tmp_path):
    cfg = compose_config(["data=folder", f"data.root={tmp_path / 'gone'}"], run_dir=tmp_path / "run")
    assert cfg.data.num_classes is None
    with pytest.raises(Exception, match="gone' does not exist"):
        instantiate(cfg.data)


@pytest.mark.slow
def test_python_m_resnet_lab_trains_and_tests_on_a_folder(tmp_path):
    """One epoch end to end on CPU: grayscale, balanced classes, the model sized by the data."""
    root = write_photo_folder(tmp_path / "photos", per_class=8)
    for path in list((root / "noise").iterdir())[3:]:
        path.unlink()  # 8 : 8 : 3, imbalanced
    result = run_cli(
        ["data=folder", f"data.root={root}", "data.image_size=16", "data.in_chans=1", "data.batch_size=4",
         "data.eval_batch_size=4", "data.num_workers=0", "data.val_fraction=0.2", "data.test_fraction=0.2",
         "data.balanced_sampler=true", "module.class_weights=balanced", "trainer.max_epochs=1"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and 0.0 <= record["metrics"]["test/acc_top1"] <= 1.0
    assert "3 classes; 9 training, 5 validation, 5 test images" in (run / "train.log").read_text()
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    weights = checkpoint["state_dict"]
    assert weights["net.fc.weight"].shape[0] == 3  # num_classes counted from the folders
    assert weights["net.conv1.weight"].shape[1] == 1  # in_chans, as the data converts the images


@pytest.mark.slow
def test_ddp_on_a_folder_with_a_class_of_broken_files(tmp_path):
    """Two processes, one image each per step, balanced sampler: a third of the draws are files
    that do not decode, so steps come where one rank's batch is empty and the other's is not.
    The empty rank must still take part in the gradient reduction (else DDP hangs)."""
    root = write_photo_folder(tmp_path / "photos", per_class=8)
    for path in (root / "noise").iterdir():
        path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run_cli(
        ["trainer=ddp_cpu", "data=folder", f"data.root={root}", "data.image_size=16", "data.batch_size=2",
         "data.eval_batch_size=2", "data.num_workers=0", "data.balanced_sampler=true", "trainer.max_epochs=1"],
        tmp_path, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    log = (run / "train.log").read_text() + result.stdout + result.stderr
    assert "unreadable image(s) in this batch" in log and "does not decode as an image" in log
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
