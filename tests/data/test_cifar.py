"""CIFAR data modules on CIFAR python pickles the tests write (no download from the internet).

The fake release is registered in place of the official one: its archive lives at a file://
URL and its checksums are those of the files written here.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from resnet_lab.data import CifarDataModule
from resnet_lab.data.cifar import CIFAR100_CLASSES, CIFAR_RELEASES
from resnet_lab.data.device_loader import DeviceResidentLoader
from resnet_lab.errors import ConfigError, DataError
from tests.helpers.fakes import write_cifar

TRAIN_PER_FILE, TEST_SIZE = 40, 40  # 5 files: 200 training images


@pytest.fixture
def published(tmp_path, monkeypatch):
    """Write a fake CIFAR-10 release to a 'server' folder and register it; return a fresh root."""
    release = write_cifar(tmp_path / "server", train_per_file=TRAIN_PER_FILE, test_size=TEST_SIZE)
    monkeypatch.setitem(CIFAR_RELEASES, "cifar10", release)
    return tmp_path / "root"


@pytest.fixture
def on_disk(tmp_path, monkeypatch):
    """A root that already holds the extracted batch files (and no archive)."""
    root = tmp_path / "root"
    release = write_cifar(root, train_per_file=TRAIN_PER_FILE, test_size=TEST_SIZE, archive=False)
    monkeypatch.setitem(CIFAR_RELEASES, "cifar10", release)
    return root


def make(root, **options) -> CifarDataModule:
    options = {"val_size": 20, "batch_size": 16, "download": False, "device_resident": False, **options}
    return CifarDataModule(root=root, **options)


def test_download_extract_and_load(published):
    data = make(published, download=True)
    data.prepare_data()
    assert (published / "cifar-10-python.tar.gz").is_file()
    data.setup()
    sizes = {split: len(labels) for split, (_, labels) in data.arrays.items()}
    assert sizes == {"train": 5 * TRAIN_PER_FILE - 20, "val": 20, "test": TEST_SIZE}
    for images, labels in data.arrays.values():
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < 10
    assert data.classes[0] == "airplane" and len(data.classes) == data.num_classes == 10
    # A second prepare_data finds intact files and leaves them alone.
    mtime = (published / "cifar-10-batches-py" / "data_batch_1").stat().st_mtime_ns
    data.prepare_data()
    assert (published / "cifar-10-batches-py" / "data_batch_1").stat().st_mtime_ns == mtime


def test_images_match_the_pickled_rows(on_disk):
    data = make(on_disk, val_size=0)
    data.setup()
    with open(on_disk / "cifar-10-batches-py" / "data_batch_1", "rb") as file:
        batch = pickle.load(file, encoding="latin1")
    first = torch.from_numpy(batch["data"][0]).view(3, 32, 32)
    assert torch.equal(data.arrays["train"][0][0], first)
    assert int(data.arrays["train"][1][0]) == batch["labels"][0]
    assert len(data.val_set) == 0


@pytest.mark.parametrize("device_resident", [True, False])
def test_loaders_shapes_and_normalization(on_disk, device_resident):
    data = make(on_disk, device_resident=device_resident)
    data.setup()
    loader = data.train_dataloader()
    assert isinstance(loader, DeviceResidentLoader) == device_resident
    images, labels = next(iter(loader))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (16,) and labels.dtype == torch.int64
    assert len(loader) == (200 - 20) // 16
    # Evaluation batches are the stored pixels, normalized, in file order.
    images, labels = next(iter(data.test_dataloader()))
    stored = data.arrays["test"][0][:16].float() / 255
    mean = torch.tensor(data.normalize.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.normalize.std).view(1, 3, 1, 1)
    torch.testing.assert_close(images, (stored - mean) / std)
    assert torch.equal(labels, data.arrays["test"][1][:16])


def test_validation_split_is_fixed_by_split_seed_not_run_seed(on_disk):
    def val_labels(**options):
        data = make(on_disk, **options)
        data.setup()
        return data.arrays["val"][0]

    assert torch.equal(val_labels(seed=1), val_labels(seed=2))
    assert not torch.equal(val_labels(split_seed=0), val_labels(split_seed=1))


def test_cifar100_reads_fine_labels(tmp_path, monkeypatch):
    release = write_cifar(tmp_path, "cifar100", train_per_file=100, test_size=30, archive=False)
    monkeypatch.setitem(CIFAR_RELEASES, "cifar100", release)
    data = CifarDataModule(release="cifar100", root=tmp_path, num_classes=100, download=False, val_size=10,
                           batch_size=32)
    data.setup()
    assert data.arrays["train"][1].max() >= 10  # fine labels go up to 99
    assert data.classes == list(CIFAR100_CLASSES)
    assert CIFAR100_CLASSES == tuple(sorted(set(CIFAR100_CLASSES))) and len(CIFAR100_CLASSES) == 100


# Bad input: each a DataError / ConfigError naming the file and the fix, before training.


def test_missing_data_with_download_off(tmp_path):
    with pytest.raises(DataError, match=r"data_batch_1 does not exist.*data.download is false.*data.download=true"):
        make(tmp_path / "empty")


def test_partial_archive_with_download_off(published):
    published.mkdir()
    archive = CIFAR_RELEASES["cifar10"].archive
    full = (published.parent / "server" / "cifar-10-python.tar.gz").read_bytes()
    (published / "cifar-10-python.tar.gz").write_bytes(full[: len(full) // 3])
    data = make(published)  # the archive is there, so construction succeeds
    with pytest.raises(DataError, match=rf"cifar-10-python.tar.gz is corrupt or incomplete.*{archive.md5}"):
        data.prepare_data()


def test_truncated_batch_file(on_disk):
    path = on_disk / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"data_batch_3 is corrupt or incomplete.*Delete .*cifar-10-batches-py"):
        make(on_disk).setup()


def test_corrupt_batch_file_with_download_off_is_named_by_prepare_data(on_disk):
    """Lightning calls prepare_data first: it must name the damaged file, not a missing archive."""
    path = on_disk / "cifar-10-batches-py" / "data_batch_4"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_4 is corrupt or incomplete: its MD5 is .*Delete .*cifar-10-batches-py and set data.download=true") as error:
        make(on_disk).prepare_data()
    assert "tar.gz" not in str(error.value).split("Delete")[0]


def test_tampered_batch_file(on_disk):
    path = on_disk / "cifar-10-batches-py" / "test_batch"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="test_batch is corrupt or incomplete: its MD5 is"):
        make(on_disk).setup()


def _register_as_official(monkeypatch, path) -> None:
    """Pretend the file's current bytes are the official ones, to reach the checks after the MD5."""
    from torchvision.datasets.utils import calculate_md5

    release = CIFAR_RELEASES["cifar10"]
    files = tuple((name, calculate_md5(path) if name == path.name else md5) for name, md5 in release.train_files)
    monkeypatch.setitem(CIFAR_RELEASES, "cifar10", release.__class__(**{**release.__dict__, "train_files": files}))


def test_pickle_that_would_run_code_is_refused(on_disk, monkeypatch, tmp_path):
    path = on_disk / "cifar-10-batches-py" / "data_batch_2"
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps({"data": Exploit(), "labels": []}, protocol=2))
    _register_as_official(monkeypatch, path)
    with pytest.raises(DataError, match=r"data_batch_2 is not a CIFAR batch file \(refusing to load io.open\)"):
        make(on_disk).setup()
    assert not marker.exists()


def test_labels_out_of_range(on_disk, monkeypatch):
    path = on_disk / "cifar-10-batches-py" / "data_batch_4"
    with open(path, "rb") as file:
        batch = pickle.load(file, encoding="latin1")
    batch["labels"][0] = 10
    path.write_bytes(pickle.dumps(batch, protocol=2))
    _register_as_official(monkeypatch, path)
    with pytest.raises(DataError, match=r"data_batch_4 has labels from 0 to 10, outside \[0, 9\]"):
        make(on_disk).setup()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"release": "cifar1000"}, "not a CIFAR release"),
        ({"num_classes": 100}, "cifar10 has 10 classes"),
        ({"val_size": -1}, "val_size must be an integer >= 0"),
        ({"device_resident": "yes"}, "device_resident must be true, false or auto"),
        ({"auto_augment": "fancy"}, "not a policy"),
        ({"auto_augment": "randaugment", "device_resident": True}, "cannot run on the device-resident path"),
        ({"cutout": 8, "random_erasing": 0.5}, "set one of them to 0"),
        ({"padding_mode": "edge"}, "padding_mode='edge' is not supported"),
        ({"mixup_alpha": -0.2}, r"data.mixup_alpha is the Beta\(alpha, alpha\) parameter: a number >= 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_config_values(on_disk, options, message):
    with pytest.raises(ConfigError, match=message):
        make(on_disk, **options)


def test_val_size_larger_than_training_set(on_disk):
    with pytest.raises(ConfigError, match=r"val_size=500 must lie in \[0, 199\]"):
        make(on_disk, val_size=500).setup()


def test_auto_picks_the_dataloader_path_for_auto_augment_and_on_cpu(on_disk):
    for options in ({}, {"auto_augment": "trivialaugment"}):
        data = make(on_disk, device_resident="auto", **options)
        data.setup()
        assert not data.uses_device_resident()  # no trainer: CPU
        images, _ = next(iter(data.train_dataloader()))
        assert images.shape == (16, 3, 32, 32)
