"""WebDataset tar shards: the format, the byte source that reads them, and their training order.

A split is a set of POSIX tar files, ``<split>-000000.tar`` ..., each holding samples as
consecutive members that share a key: ``<key>.jpg`` (or ``.png``, ``.webp``, ``.bmp``: the
image file's bytes, as they were) and ``<key>.cls`` (the class index in ASCII), the
convention of WebDataset, OpenCLIP, timm's ``wds`` reader and img2dataset. Beside them,
``<split>.json`` lists the shards with their sample counts in the shard-index format of
WebDataset's ``wids`` (``{"wids_version": 1, "shardlist": [{"url", "nsamples"}]}``), plus
the class names (``classes``). ``python -m resnet_lab.data.shard_writer`` writes them
(``python -m resnet_lab.data.shard_writer``).

Reading: ``ShardSource`` gives sample ``i`` by seeking to its member in its shard (a tar
member's data lies at a fixed offset after its header), so the shards serve as a map-style
data set and every guarantee of the file path carries over: exact epoch length, a disjoint
share per DDP rank, batches split over workers by the DataLoader, exact resume.
``ShardOrderSampler`` keeps the reads local: per epoch it shuffles the shard order, then the
samples within windows of consecutive shards, and gives each rank a contiguous part, so a
worker reads from a few shards at a time, mostly forward.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from resnet_lab.data.fast_images import EpochSeededSampler
from resnet_lab.errors import DataError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
LABEL_EXTENSION = "cls"
INDEX_KIND = "wids-shard-index-v1"
OPEN_SHARDS = 8  # file handles a worker keeps open (least recently used closed first)


def index_path(root: Path, split: str) -> Path:
    return root / f"{split}.json"


def read_index(root: Path, split: str) -> dict:
    """The shard index of ``split`` under ``root``, checked: shards listed, present, counted."""
    path = index_path(root, split)
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: data.format=shards reads the shard index <split>.json beside "
            f"the shards. Write shards with: python -m resnet_lab.data.shard_writer --source <tree> --output {root}"
        )
    try:
        index = json.loads(path.read_text())
        shards = [(str(entry["url"]), int(entry["nsamples"])) for entry in index["shardlist"]]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} is not a shard index ({error}); expected {{\"shardlist\": [{{\"url\", \"nsamples\"}}], \"classes\": [...]}}.") from None
    if not shards or any(count <= 0 for _, count in shards):
        raise DataError(f"{path} lists no shards, or a shard with no samples; write the shards again.")
    if not isinstance(index.get("classes"), list) or not index["classes"]:
        raise DataError(f"{path} has no \"classes\" list (the class names, in label order); write the shards again.")
    for url, _ in shards:
        if not (root / url).is_file():
            raise DataError(f"{root / url}, listed in {path}, does not exist; copy it back or write the shards again.")
    return {**index, "shards": shards}


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset's key and extension: the key is the name up to the first dot of its basename."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def scan_shard(path: Path, expected: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets and sizes of each sample's image, (n, 2) int64; labels, (n,) int64) of one shard."""
    images: list[tuple[int, int]] = []
    labels: list[int] = []
    current, image, label = None, None, None

    def close() -> None:
        if current is None:
            return
        if image is None or label is None:
            raise DataError(
                f"sample {current!r} of {path} has no {'image (.jpg, .png, ...)' if image is None else '.cls label'} "
                "member; each sample needs both."
            )
        images.append(image)
        labels.append(label)

    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, extension = _split_name(member.name)
                if key != current:
                    close()
                    current, image, label = key, None, None
                if extension in IMAGE_EXTENSIONS:
                    image = (member.offset_data, member.size)
                elif extension == LABEL_EXTENSION:
                    tar.fileobj.seek(member.offset_data)
                    label = int(tar.fileobj.read(member.size).decode().strip())
            close()
    except (tarfile.TarError, OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable WebDataset shard ({error}); write the shards again.") from None
    if len(images) != expected:
        raise DataError(f"{path} holds {len(images)} samples but its shard index says {expected}; write the shards again.")
    return np.array(images, dtype=np.int64).reshape(-1, 2), np.array(labels, dtype=np.int64)


class ShardSource:
    """The samples of one split's shards, by global index (shards in index order).

    Each process (each DataLoader worker) scans a shard's tar headers the first time it reads
    from it and keeps at most ``OPEN_SHARDS`` files open.
    """

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        index = read_index(self.root, split)
        self.classes = [str(name) for name in index["classes"]]
        self.urls = [url for url, _ in index["shards"]]
        self.counts = np.array([count for _, count in index["shards"]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self._scanned: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._files: OrderedDict[int, object] = OrderedDict()
        self.check_first_shard()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict:  # open files stay in the process that opened them
        return {**self.__dict__, "_files": OrderedDict()}

    def check_first_shard(self) -> None:
        """Read the first shard whole, so that a wrong format fails before training."""
        _, labels = self._scan(0)
        if labels.min() < 0 or labels.max() >= len(self.classes):
            raise DataError(
                f"{self.root / self.urls[0]} holds labels {labels.min()}..{labels.max()}, outside the "
                f"{len(self.classes)} classes of its index; write the shards again."
            )

    def _scan(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._scanned:
            self._scanned[shard] = scan_shard(self.root / self.urls[shard], int(self.counts[shard]))
        return self._scanned[shard]

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, position in it) of global sample ``index``."""
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, index - int(self.starts[shard])

    def name(self, index: int) -> str:
        shard, position = self.locate(index)
        return f"sample {position} of {self.root / self.urls[shard]}"

    def _file(self, shard: int):
        if shard in self._files:
            self._files.move_to_end(shard)
            return self._files[shard]
        if len(self._files) >= OPEN_SHARDS:
            self._files.popitem(last=False)[1].close()
        self._files[shard] = open(self.root / self.urls[shard], "rb")  # noqa: SIM115 (kept open)
        return self._files[shard]

    def read(self, index: int) -> tuple[bytes, int]:
        shard, position = self.locate(index)
        images, labels = self._scan(shard)
        offset, size = images[position]
        # pread, not seek + read: worker processes forked after the parent opened a shard share
        # its file offset, and would move it under each other.
        return os.pread(self._file(shard).fileno(), int(size), int(offset)), int(labels[position])

    @property
    def labels(self) -> np.ndarray:
        """Every sample's label (class weights, the balanced sampler): reads every shard's
        headers and labels once, which the training path alone never needs."""
        return np.concatenate([self._scan(shard)[1] for shard in range(len(self.urls))])

    def shard_ranges(self) -> list[range]:
        return [range(int(start), int(end)) for start, end in zip(self.starts[:-1], self.starts[1:])]


class _ShardLocalOrder(DistributedSampler):
    """``DistributedSampler``'s contract (``num_samples`` indices per rank, disjoint ranks,
    a pure function of (seed, epoch, rank)) with a shard-local order; see the module docstring."""

    def __iter__(self) -> Iterator[int]:
        source: ShardSource = self.dataset.source
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        ranges = source.shard_ranges()
        order = torch.cat([torch.arange(ranges[s].start, ranges[s].stop) for s in torch.randperm(len(ranges), generator=generator)])
        window = max(1, self.window)
        for start in range(0, len(order), window):
            part = order[start : start + window]
            order[start : start + window] = part[torch.randperm(len(part), generator=generator)]
        if self.total_size > len(order):  # without drop_last, pad as DistributedSampler does
            order = torch.cat([order, order[: self.total_size - len(order)]])
        mine = order[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]
        return iter(mine.tolist())


class ShardOrderSampler(EpochSeededSampler, _ShardLocalOrder):
    """The training sampler over shards: shard-local order, ``(index, epoch)`` pairs, exact
    resume. ``window``: samples shuffled together (after the shard order is shuffled)."""

    def __init__(self, dataset, *, window: int, **kwargs) -> None:
        self.window = window
        super().__init__(dataset, **kwargs)

