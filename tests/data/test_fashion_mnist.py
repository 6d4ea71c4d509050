"""Fashion-MNIST on idx.gz files the tests write, and on the real files where Debian installs them."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from resnet_lab.data import FashionMnistDataModule
from resnet_lab.data import fashion_mnist as fm
from resnet_lab.errors import DataError
from tests.helpers.fakes import idx_bytes, write_fashion_mnist

TRAIN, TEST = 200, 100


def register(monkeypatch, folder: Path, content_md5s: dict[str, str]) -> None:
    """Make the files in ``folder`` the 'official' ones: their .gz and content checksums."""
    for name, content_md5 in content_md5s.items():
        gz_md5 = hashlib.md5((folder / f"{name}.gz").read_bytes()).hexdigest()
        monkeypatch.setitem(fm.FASHION_MNIST_FILES, name, fm.IdxFile(name, gz_md5, content_md5))


@pytest.fixture
def written(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "written"
    register(monkeypatch, folder, write_fashion_mnist(folder, train_size=TRAIN, test_size=TEST))
    return folder


def make(root, **options) -> FashionMnistDataModule:
    options = {"download": False, "system_dirs": [], "val_size": 50, "batch_size": 25, **options}
    return FashionMnistDataModule(root=root, **options)


def test_reads_files_in_root(written):
    data = make(written)
    data.setup()
    assert data.source == str(written)
    sizes = {split: len(labels) for split, (_, labels) in data.arrays.items()}
    assert sizes == {"train": TRAIN - 50, "val": 50, "test": TEST}
    images, labels = data.arrays["test"]
    assert images.shape == (TEST, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 9
    with gzip.open(written / "t10k-images-idx3-ubyte.gz") as file:
        first = torch.frombuffer(bytearray(file.read()[16 : 16 + 784]), dtype=torch.uint8)
    assert torch.equal(images[0, 0].flatten(), first)
    assert data.classes[0] == "T-shirt/top" and data.in_chans == 1


def test_search_order_root_then_torchvision_layout_then_system_dirs(written, tmp_path):
    root = tmp_path / "root"
    assert make(root, system_dirs=[written]).source == str(written)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in written.iterdir():
        (raw / path.name).write_bytes(path.read_bytes())
    assert make(root, system_dirs=[written]).source == str(raw)
    for path in written.iterdir():
        (root / path.name).write_bytes(path.read_bytes())
    assert make(root, system_dirs=[written]).source == str(root)


def test_uncompressed_files_are_accepted_by_content_checksum(written, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in written.iterdir():
        (plain / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    data = make(plain)
    data.setup()
    assert len(data.arrays["test"][1]) == TEST


def test_recompressed_files_are_accepted_by_content_checksum(written, tmp_path):
    """Like Debian's package: other .gz bytes (other MD5), same idx content."""
    other = tmp_path / "recompressed"
    other.mkdir()
    for path in written.iterdir():
        (other / path.name).write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=1))
        assert (other / path.name).read_bytes() != path.read_bytes()
    data = make(other)
    data.setup()
    assert torch.equal(data.arrays["test"][0], make(written).load_split(train=False)[0])


def test_download_into_root_when_nowhere_else(written, tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "MIRROR", written.as_uri() + "/")
    root = tmp_path / "root"
    data = make(root, download=True)
    data.prepare_data()
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in written.iterdir())
    data.setup()
    assert data.source == str(root)


def test_missing_files_with_download_off_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match=r"not in any of .*data.download is false.*apt-get install dataset-fashion-mnist"):
        make(tmp_path / "nothing")


def test_truncated_gz(written):
    path = written / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is not a readable gzip file"):
        make(written).setup()


def test_tampered_content(written):
    path = written / "train-images-idx3-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[1000] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz does not hold the official train-images-idx3-ubyte: the MD5"):
        make(written).setup()


def test_header_that_does_not_match_the_bytes(written, monkeypatch):
    """A file registered as official but malformed: the parser still refuses it, naming it."""
    path = written / "t10k-images-idx3-ubyte.gz"
    content = idx_bytes(torch.zeros(TEST, 28, 28, dtype=torch.uint8).numpy())[:-784]  # one image short
    path.write_bytes(gzip.compress(content))
    register(monkeypatch, written, {"t10k-images-idx3-ubyte": hashlib.md5(content).hexdigest()})
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz declares shape \(100, 28, 28\) \(78416 bytes\) but holds 77632 bytes"):
        make(written).setup()


def test_labels_out_of_range(written, monkeypatch):
    path = written / "t10k-labels-idx1-ubyte.gz"
    labels = torch.full((TEST,), 10, dtype=torch.uint8).numpy()
    content = idx_bytes(labels)
    path.write_bytes(gzip.compress(content))
    register(monkeypatch, written, {"t10k-labels-idx1-ubyte": hashlib.md5(content).hexdigest()})
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz has label 10, outside \[0, 9\]"):
        make(written).setup()


# The real data set, where CI installs Debian's dataset-fashion-mnist.

requires_debian_files = pytest.mark.skipif(
    not Path(fm.DEBIAN_DIR).is_dir(),
    reason=f"real Fashion-MNIST not installed at {fm.DEBIAN_DIR} (apt-get install dataset-fashion-mnist)",
)


@requires_debian_files
def test_real_files_verify_and_match_the_published_statistics(tmp_path):
    data = FashionMnistDataModule(root=tmp_path, download=False, val_size=5000)
    assert data.source == fm.DEBIAN_DIR
    data.setup()
    sizes = {split: len(labels) for split, (_, labels) in data.arrays.items()}
    assert sizes == {"train": 55000, "val": 5000, "test": 10000}
    train = torch.cat([data.arrays["train"][0], data.arrays["val"][0]]).float() / 255
    assert train.mean().item() == pytest.approx(fm.FASHION_MNIST_MEAN[0], abs=1e-4)
    assert train.std().item() == pytest.approx(fm.FASHION_MNIST_STD[0], abs=1e-4)
    # Balanced classes: 6,000 training and 1,000 test images each.
    labels = torch.cat([data.arrays["train"][1], data.arrays["val"][1]])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(data.arrays["test"][1]), torch.full((10,), 1000))


@pytest.mark.slow
@requires_debian_files
def test_small_resnet_reaches_85_percent_test_accuracy_after_one_epoch(tmp_path):
    """Real data through the device-resident path: one epoch of a two-stage ResNet on CPU."""
    from resnet_lab.models import build_model

    # One thread: on a 2-core machine shared with other jobs, two OpenMP threads spin at each
    # barrier: this epoch took 312 s with two threads and 51 s with one, under similar load.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        accuracy = _one_epoch_accuracy(tmp_path, build_model)
    finally:
        torch.set_num_threads(threads)
    assert accuracy >= 0.85, f"test accuracy {accuracy:.4f} after one epoch"


def _one_epoch_accuracy(tmp_path, build_model) -> float:
    torch.manual_seed(0)
    # No crop: one epoch is too short for crop augmentation to pay off; flips stay on.
    data = FashionMnistDataModule(
        root=tmp_path, download=False, val_size=0, batch_size=128, eval_batch_size=1000,
        device_resident=True, pad=0,
    )
    data.setup()
    # ResNet's 7x7 stride-2 stem and max pool take 28x28 to 7x7; two basic blocks, 32 and 64 wide.
    net = build_model(
        None, block="basic", layers=(1, 1), widths=(32, 64), stem="imagenet", stem_width=32,
        stem_pool=True, num_classes=10, in_chans=1,
    )
    loader = data.train_dataloader()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.2, total_steps=len(loader), pct_start=0.25)
    net.train()
    for images, labels in loader:
        loss = torch.nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in data.test_dataloader():
            correct += int((net(images).argmax(1) == labels).sum())
    return correct / len(data.arrays["test"][1])
