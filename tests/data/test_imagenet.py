"""ImageNet-style trees and Imagenette releases, on small JPEG trees the tests write."""

from __future__ import annotations

import logging
import tarfile

import lightning as L
import pytest
import torch
from torchvision.datasets.utils import calculate_md5

from resnet_lab.data import ImageNetSubsetDataModule
from resnet_lab.data import imagenet as imagenet_module
from resnet_lab.data.archives import RemoteFile
from resnet_lab.data.imagenet_classes import (
    IMAGENET100,
    IMAGENETTE,
    IMAGEWOOF,
    imagenet_class_names,
)
from resnet_lab.errors import ConfigError, DataError
from tests.helpers.fakes import write_image_tree

EXTRA = ("n09999999",)  # a class folder that no named subset lists


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Imagenette's ten classes plus one more: 3 training and 2 validation JPEGs each."""
    return write_image_tree(tmp_path_factory.mktemp("imagenet"), IMAGENETTE + EXTRA, train_per_class=3, val_per_class=2)


def make(root, **options) -> ImageNetSubsetDataModule:
    options = {"num_classes": 10, "subset": "imagenette", "image_size": 32, "batch_size": 8, **options}
    return ImageNetSubsetDataModule(root=root, **options)


def test_named_subsets_and_class_names():
    assert len(IMAGENETTE) == len(IMAGEWOOF) == 10 and len(set(IMAGENET100)) == 100
    names = imagenet_class_names()
    assert len(names) == 1000 and list(names) == sorted(names)
    assert all(wnid in names for wnid in IMAGENETTE + IMAGEWOOF + IMAGENET100)
    assert names["n01440764"] == "tench" and names["n03888257"] == "parachute"


def test_named_subset(tree):
    data = make(tree)
    assert data.classes[0] == "tench" and len(data.classes) == 10  # known before setup
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (30, 20, 20)
    assert sorted(set(data.train_set.labels.tolist())) == list(range(10))
    assert all(EXTRA[0].encode() not in path for path in data.train_set.paths)
    # Class i is the i-th wnid in sorted order, like torchvision's ImageFolder.
    first = data.train_set.paths[0].decode()
    assert f"/{sorted(IMAGENETTE)[0]}/" in first and data.train_set.labels[0] == 0


def test_first_n_classes(tree):
    data = make(tree, subset=None, num_classes=11)
    data.setup()
    assert data.wnids == tuple(sorted(IMAGENETTE + EXTRA))
    assert data.classes[-1] == EXTRA[0]  # not an ILSVRC class: named by its wnid
    three = make(tree, subset=None, num_classes=3)
    three.setup()
    assert three.wnids == tuple(sorted(IMAGENETTE)[:3]) and len(three.train_set) == 9


def test_subset_from_a_file(tree, tmp_path):
    listing = tmp_path / "classes.txt"
    listing.write_text(f"# two classes\n{IMAGENETTE[5]}\n\n{IMAGENETTE[2]}  # cassette player\n")
    data = make(tree, subset=str(listing), num_classes=2, batch_size=4)
    data.setup()
    assert data.wnids == tuple(sorted((IMAGENETTE[5], IMAGENETTE[2])))
    assert data.classes == ["cassette player", "French horn"]
    assert len(data.train_set) == 6


def test_batches_shapes_and_augmentation_only_in_training(tree):
    data = make(tree, val_size=10)
    data.setup()
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (20, 10, 20)
    batch = next(iter(data.train_dataloader()))
    assert batch[0].shape == (8, 3, 32, 32) and batch[0].dtype == torch.uint8  # the fast path's workers
    images, labels = data.on_after_batch_transfer(batch, 0)  # as after the transfer to the device
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.max() < 10
    # Random resized crop and flip, drawn anew each epoch (the same in the same epoch).
    assert not torch.equal(data.train_set[(0, 0)][0], data.train_set[(0, 1)][0])
    assert torch.equal(data.train_set[(0, 1)][0], data.train_set[(0, 1)][0])
    assert torch.equal(data.val_set[0][0], data.val_set[0][0])  # resize + centre crop
    images, _ = data.on_after_batch_transfer(next(iter(data.test_dataloader())), 0)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32


def test_the_torchvision_pipeline_stays_available(tree):
    data = make(tree, pipeline="torchvision")
    data.setup()
    images, _ = next(iter(data.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32  # normalized in the workers


def test_undecodable_jpeg_mid_epoch_is_skipped_counted_and_logged(tree, tmp_path, caplog):
    """A broken file passes the tree check (its name is an image's) and fails at decode time."""
    root = write_image_tree(tmp_path / "tree", IMAGENETTE[:2], train_per_class=6, val_per_class=2)
    broken = root / "train" / IMAGENETTE[0] / "broken.JPEG"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    data = ImageNetSubsetDataModule(root=root, subset=None, num_classes=2, image_size=16, batch_size=13)
    seen = []

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3 * 16 * 16, 2)

        def training_step(self, batch, batch_idx):
            images, labels = batch
            seen.append(labels.clone())
            return torch.nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    with caplog.at_level(logging.WARNING):
        trainer.fit(Probe(), datamodule=data)
    assert data.skipped_samples == 1
    assert len(seen) == 1 and len(seen[0]) == 12 and (seen[0] >= 0).all()
    assert any(str(broken) in record.getMessage() for record in caplog.records)
    assert any("skipped 1 unreadable image" in record.getMessage() for record in caplog.records)


def test_imagenette_release_download(tmp_path, monkeypatch):
    source = write_image_tree(tmp_path / "build" / "imagenette2-160", IMAGENETTE, train_per_class=1, val_per_class=1)
    archive = tmp_path / "server" / "imagenette2-160.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="imagenette2-160")
    monkeypatch.setitem(
        imagenet_module.IMAGENETTE_RELEASES, "imagenette2-160", RemoteFile(archive.as_uri(), calculate_md5(archive))
    )
    root = tmp_path / "root"
    data = make(root, release="imagenette2-160", download=True)
    data.prepare_data()
    assert (root / "imagenette2-160" / "train" / IMAGENETTE[0]).is_dir()
    data.setup()
    assert len(data.train_set) == 10 and len(data.test_set) == 10


# Bad input: each a DataError / ConfigError naming the file and the fix, before training.


def test_tree_without_train_or_val(tmp_path, tree):
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match=r"has no train/ folder; expected the layout .*/train/<wnid>/\*\.JPEG"):
        make(tmp_path).setup()
    root = tmp_path / "only_train"
    (root / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"only_train has no val/ folder.*valprep.sh"):
        make(root).setup()


def test_missing_release_with_download_off(tmp_path):
    data = make(tmp_path, release="imagenette2-160")
    with pytest.raises(DataError, match="imagenette2-160.tgz does not exist and data.download is false"):
        data.prepare_data()


def test_empty_class_folder(tmp_path):
    root = write_image_tree(tmp_path, IMAGENETTE[:2], train_per_class=1, val_per_class=1)
    for path in (root / "val" / IMAGENETTE[1]).iterdir():
        path.unlink()
    with pytest.raises(DataError, match=rf"val/{IMAGENETTE[1]} holds no images"):
        make(root, subset=None, num_classes=2).setup()


def test_unknown_wnid_in_a_subset_file(tmp_path, tree):
    listing = tmp_path / "classes.txt"
    listing.write_text(f"{IMAGENETTE[0]}\nn01234567\n")
    with pytest.raises(DataError, match=rf"unknown wnid n01234567 in {listing}: .*train/n01234567 does not exist"):
        make(tree, subset=str(listing), num_classes=2).setup()


@pytest.mark.parametrize(
    "text, message",
    [
        ("n01440764\ntench\n", r"line 2: 'tench' is not a WordNet id"),
        ("n01440764\nn01440764\n", r"line 2: n01440764 is listed twice"),
        ("# nothing\n", "lists no wnids"),
    ],
)
def test_malformed_subset_file(tmp_path, text, message):
    listing = tmp_path / "classes.txt"
    listing.write_text(text)
    with pytest.raises(DataError, match=message):
        make(tmp_path, subset=str(listing), num_classes=2)


def test_non_image_file_in_a_class_folder(tmp_path):
    root = write_image_tree(tmp_path, IMAGENETTE[:2], train_per_class=1, val_per_class=1)
    (root / "train" / IMAGENETTE[0] / "notes.txt").write_text("not an image")
    (root / "train" / IMAGENETTE[1] / ".DS_Store").write_bytes(b"hidden files are ignored")
    with pytest.raises(DataError, match=r"notes.txt is not an image file .* move it out of the tree"):
        make(root, subset=None, num_classes=2).setup()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"subset": "imagenet100", "num_classes": 10}, "has 100 classes but data.num_classes=10; set data.num_classes=100"),
        ({"subset": "imagenet21"}, "neither a named subset .* nor a file of wnids"),
        ({"release": "imagenette3"}, "not an Imagenette release"),
        ({"in_chans": 1}, "in_chans must be 3"),
        ({"eval_resize_size": 16}, "smaller than data.image_size"),
        ({"scale": (0.0, 1.0)}, r"data.scale=\[0.0, 1.0\] must satisfy 0.0 < min <= max <= 1.0"),
        ({"ratio": (2.0, 1.0)}, r"data.ratio=\[2.0, 1.0\] must satisfy"),
        ({"auto_augment": "cutmix"}, "data.auto_augment='cutmix' is not a policy"),
    ],
)
def test_bad_config_values(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        make(tmp_path, **options)


def test_more_classes_than_the_tree_has(tree):
    with pytest.raises(DataError, match="has 11 class folders, fewer than data.num_classes=20"):
        make(tree, subset=None, num_classes=20).setup()


def test_configs_saved_before_scale_and_auto_augment_still_build(tree):
    """A run directory from before the keys were renamed resumes with its own config."""
    data = make(tree, min_scale=0.35, trivial_augment=True)
    assert data.transforms.scale == (0.35, 1.0) and data.transforms.auto_augment == "trivialaugment"
    assert any(type(step).__name__ == "TrivialAugmentWide" for step in data.transforms.train().transforms)
