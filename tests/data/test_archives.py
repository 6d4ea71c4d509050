"""Download and extraction on local files: file:// URLs, real tar.gz archives, no network."""

from __future__ import annotations

import io
import tarfile

import pytest
from torchvision.datasets.utils import calculate_md5

from resnet_lab.data.archives import RemoteFile, extract_tar, fetch
from resnet_lab.errors import DataError
from tests.helpers.fakes import tar_gz


@pytest.fixture
def published(tmp_path):
    """An archive 'published' at a file:// URL, with its checksum."""
    source = tar_gz(tmp_path / "server" / "release.tar.gz", {"release/a.txt": b"alpha", "release/b/c.txt": b"gamma"})
    return RemoteFile(source.as_uri(), calculate_md5(source))


def test_fetch_downloads_verifies_and_reuses(tmp_path, published):
    root = tmp_path / "root"
    path = fetch(published, root, download=True)
    assert path == root / "release.tar.gz" and calculate_md5(path) == published.md5
    assert not (root / "release.tar.gz.partial").exists()
    # A second fetch finds the intact file and needs no download, even with download off.
    assert fetch(published, root, download=False) == path


def test_fetch_rejects_a_download_with_the_wrong_checksum(tmp_path, published):
    wrong = RemoteFile(published.url, "0" * 32)
    with pytest.raises(DataError, match="MD5 .* not the official 0{32}"):
        fetch(wrong, tmp_path / "root", download=True)
    # Nothing that looks like the file is left behind.
    assert list((tmp_path / "root").iterdir()) == []


def test_fetch_reports_an_unreachable_url(tmp_path):
    missing = RemoteFile((tmp_path / "nowhere.tar.gz").as_uri(), "0" * 32)
    with pytest.raises(DataError, match="could not download .*nowhere.tar.gz"):
        fetch(missing, tmp_path / "root", download=True)


def test_fetch_without_download(tmp_path, published):
    root = tmp_path / "root"
    with pytest.raises(DataError, match="release.tar.gz does not exist and data.download is false"):
        fetch(published, root, download=False)
    # A partial archive: the first half of the real one.
    root.mkdir()
    data = (tmp_path / "server" / "release.tar.gz").read_bytes()
    (root / "release.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="release.tar.gz is corrupt or incomplete: its MD5 is"):
        fetch(published, root, download=False)
    # With download on, the partial file is replaced by the real one.
    assert calculate_md5(fetch(published, root, download=True)) == published.md5


def test_extract_tar_writes_members_under_root(tmp_path, published):
    archive = fetch(published, tmp_path / "root", download=True)
    extract_tar(archive, tmp_path / "root")
    assert (tmp_path / "root" / "release" / "a.txt").read_bytes() == b"alpha"
    assert (tmp_path / "root" / "release" / "b" / "c.txt").read_bytes() == b"gamma"
    assert not any(p.name.startswith(".extracting") for p in (tmp_path / "root").iterdir())


def _archive_with(path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("release/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data) if data else None)


@pytest.mark.parametrize(
    "member, message",
    [
        (tarfile.TarInfo("../escaped.txt"), "would be written to .*, outside"),
        (tarfile.TarInfo("release/../../escaped.txt"), "would be written to .*, outside"),
        (tarfile.TarInfo("/tmp/absolute-escape.txt"), "would be written to .*, outside"),
    ],
)
def test_extract_tar_refuses_members_outside_root(tmp_path, member, message):
    archive = tmp_path / "evil.tar.gz"
    _archive_with(archive, member, b"pwned")
    root = tmp_path / "root"
    with pytest.raises(DataError, match=message):
        extract_tar(archive, root)
    # Nothing was written, not even the harmless member.
    assert not (tmp_path / "escaped.txt").exists()
    assert not (root / "release").exists()


def test_extract_tar_refuses_links_out_of_root(tmp_path):
    link = tarfile.TarInfo("release/passwd")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../../etc/passwd"
    archive = tmp_path / "link.tar.gz"
    _archive_with(archive, link)
    with pytest.raises(DataError, match=r"holds a link 'release/passwd' -> '\.\./\.\./\.\./etc/passwd' that points outside"):
        extract_tar(archive, tmp_path / "root")


def test_extract_tar_refuses_device_files(tmp_path):
    device = tarfile.TarInfo("release/null")
    device.type = tarfile.CHRTYPE
    archive = tmp_path / "device.tar.gz"
    _archive_with(archive, device)
    with pytest.raises(DataError, match="neither a file nor a folder"):
        extract_tar(archive, tmp_path / "root")


def test_extract_tar_reports_a_corrupt_archive(tmp_path, published):
    archive = tmp_path / "broken.tar.gz"
    data = (tmp_path / "server" / "release.tar.gz").read_bytes()
    archive.write_bytes(data[:40])
    with pytest.raises(DataError, match="broken.tar.gz cannot be extracted"):
        extract_tar(archive, tmp_path / "root")


@pytest.mark.parametrize(
    "member",
    [tarfile.TarInfo("../escaped.txt"), tarfile.TarInfo("release/../../escaped.txt")],
    ids=["parent", "nested parent"],
)
def test_our_guard_alone_keeps_members_inside_root(tmp_path, member, monkeypatch):
    """Without Python's own "data" filter (older Pythons, or if it were ever bypassed) only
    resnet_lab's member check stands between the archive and the file system."""
    monkeypatch.delattr(tarfile, "data_filter")
    archive = tmp_path / "evil.tar.gz"
    _archive_with(archive, member, b"pwned")
    root = tmp_path / "deep" / "root"
    with pytest.raises(DataError, match="would be written to .*, outside"):
        extract_tar(archive, root)
    assert not list(tmp_path.rglob("escaped.txt"))
