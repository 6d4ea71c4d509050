"""Fetching data files: a checksum-verified download and an extraction that stays inside its root.

Hashing is torchvision's (``check_integrity``, ``calculate_md5``). Downloading and extraction
are ours, for three reasons:

* torchvision's ``download_url`` writes straight to the final file name, so an interrupted
  download leaves a file that looks present; ours writes ``<name>.partial`` and renames it
  only once its checksum matches.
* ``download_url`` reads ``response.length``, which ``file://`` responses lack; ours takes any
  URL urllib opens, so the tests run the real download code on local files.
* torchvision's ``extract_archive`` calls ``TarFile.extractall`` without a filter, so a member
  named ``../x`` or ``/etc/x``, or a link pointing out of the root, is written wherever it
  points (CVE-2007-4559). ``extract_tar`` refuses such archives before writing anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.utils import USER_AGENT, calculate_md5, check_integrity
from tqdm import tqdm

from resnet_lab.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """A file published at ``url`` whose bytes have the MD5 digest ``md5``."""

    url: str
    md5: str

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def verify_md5(path: Path, md5: str, *, how_to_fix: str) -> None:
    """Raise ``DataError`` unless ``path`` is a file with the MD5 digest ``md5``."""
    if not path.is_file():
        raise DataError(f"{path} does not exist. {how_to_fix}")
    actual = calculate_md5(path)
    if actual != md5:
        raise DataError(
            f"{path} is corrupt or incomplete: its MD5 is {actual}, the official file's is {md5}. "
            f"{how_to_fix}"
        )


def fetch(remote: RemoteFile, directory: Path, *, download: bool) -> Path:
    """Return ``directory/<file name>`` holding ``remote``'s exact bytes, downloading it if allowed.

    A file already there with the wrong checksum (an interrupted download, a different release)
    is downloaded again when ``download`` is set, and refused otherwise.
    """
    path = directory / remote.filename
    if check_integrity(path, remote.md5):
        return path
    if not download:
        if not path.exists():
            raise DataError(
                f"{path} does not exist and data.download is false. Set data.download=true to "
                f"download it from {remote.url}, or copy it there yourself."
            )
        verify_md5(
            path,
            remote.md5,
            how_to_fix="It is a partial download or another file: delete it, then set "
            f"data.download=true or copy the file from {remote.url} there yourself.",
        )
    download_file(remote, path)
    return path


def download_file(remote: RemoteFile, path: Path, *, timeout_s: float = 60.0) -> None:
    """Download ``remote`` to ``path``, which appears only once the bytes match ``remote.md5``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    digest = hashlib.md5(usedforsecurity=False)
    log.info("downloading %s to %s", remote.url, path)
    request = urllib.request.Request(remote.url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response, open(partial, "wb") as out:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=path.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"could not download {remote.url} to {path}: {error}. Check the network, or download "
            f"the file elsewhere and copy it to {path}."
        ) from error
    if digest.hexdigest() != remote.md5:
        partial.unlink()
        raise DataError(
            f"the download of {remote.url} has MD5 {digest.hexdigest()}, not the official "
            f"{remote.md5}: the transfer was cut short or the server sent another file. Try "
            f"again, or download it elsewhere, check its MD5 and copy it to {path}."
        )
    os.replace(partial, path)


def _check_member(archive: Path, member: tarfile.TarInfo, root: Path) -> None:
    target = (root / member.name).resolve()
    if not target.is_relative_to(root):
        raise DataError(
            f"{archive} holds a member {member.name!r} that would be written to {target}, outside "
            f"{root}. This is not the official archive: delete it and download it again."
        )
    if member.issym() or member.islnk():
        link_base = target.parent if member.issym() else root
        link_target = (link_base / member.linkname).resolve()
        if not link_target.is_relative_to(root):
            raise DataError(
                f"{archive} holds a link {member.name!r} -> {member.linkname!r} that points outside "
                f"{root}. This is not the official archive: delete it and download it again."
            )
    elif not (member.isfile() or member.isdir()):
        raise DataError(
            f"{archive} holds {member.name!r}, which is neither a file nor a folder (a device or a "
            "pipe). This is not the official archive: delete it and download it again."
        )


def extract_tar(archive: Path, root: Path) -> None:
    """Extract a (compressed) tar archive into ``root``, refusing members that would land outside.

    Every member is checked before anything is written, and the members are extracted into a
    temporary folder first and moved into ``root`` only when all succeeded, so an interrupted
    extraction never leaves a tree that looks complete.
    """
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member, root)
            with tempfile.TemporaryDirectory(dir=root, prefix=".extracting-") as staging:
                # The "data" filter (Python >= 3.11.4 / 3.10.12) re-checks what _check_member
                # checked and also drops permission bits such as setuid.
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, members=members, **kwargs)
                for entry in sorted(os.listdir(staging)):
                    destination = root / entry
                    if destination.is_dir():
                        shutil.rmtree(destination)
                    elif destination.exists():
                        destination.unlink()
                    os.replace(os.path.join(staging, entry), destination)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(
            f"{archive} cannot be extracted ({error}). Delete it and download it again."
        ) from error
