"""Section ``jpeg``: our JPEG training loader against the ten-line torchvision loader and decode-only.

Three loaders over the same JPEG tree, batch ``--batch-size``, ``--image-size`` crops:

* ``ours``: the fast path as the data modules build it (``resnet_lab.data.fast_images``):
  header-first crop, scaled decode, crop-then-resize on uint8, flip, uint8 batches; its
  float conversion and normalization run on the device after the transfer, so not here;
* ``ten-line``: what a user writes first: ``torchvision.datasets.ImageFolder`` (Pillow) with
  ``v2.RandomResizedCrop``, ``RandomHorizontalFlip``, ``ToImage``, ``ToDtype(float32,
  scale=True)``, ``Normalize`` per image in the workers, float32 batches;
* ``decode-only``: read each file and decode it whole with our decoder, nothing else: the
  floor of any loader that decodes every image fully.

Two measures, each from blocks alternating between the loaders (``--repeats``):

* CPU cost per delivered sample: one process (``num_workers=0``), one torch thread, CPU time
  of everything up to the batch handed to the device, as images per CPU-second;
* throughput of ``--loader-workers`` worker processes: batches/s as they leave the loader
  (wall clock). Each block starts fresh persistent workers and shuts them down at its end,
  so that no loader's prefetching runs inside another's block; the warm-up batches absorb
  the start.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from resnet_lab.bench.results import Measurement, Ratio, SectionResult
from resnet_lab.bench.settings import BenchSettings
from resnet_lab.bench.timing import Block, synchronize
from resnet_lab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHOTO_CROP = (340, 450)  # height, width: about ImageNet's typical training image
CPU_COST_TARGET = 2.5  # ours / ten-line, images per CPU-second (issue 15)
THROUGHPUT_TARGET = 2.0  # ours / ten-line, images/s with the workers (issue 15)
CLASSES = ("china", "flower")  # scikit-learn's two sample photos


def write_photo_tree(root: Path, count: int, seed: int = 0, scale: int = 1) -> Path:
    """``count`` JPEGs (quality 90) cut from scikit-learn's two sample photos at random places,
    ~450 x 340 (+-10 %), in ``root/<photo>/``: an ImageFolder tree of real photographs.

    scale: enlarge the photos (bicubic) and the crops this many times, for large images.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    if scale > 1:
        photos = [np.asarray(Image.fromarray(p).resize((p.shape[1] * scale, p.shape[0] * scale), Image.BICUBIC)) for p in photos]
    for i in range(count):
        photo = photos[i % len(photos)]
        h = min(photo.shape[0], int(PHOTO_CROP[0] * scale * rng.uniform(0.9, 1.1)))
        w = min(photo.shape[1], int(PHOTO_CROP[1] * scale * rng.uniform(0.9, 1.1)))
        top, left = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
        folder = root / CLASSES[i % len(photos)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[top : top + h, left : left + w]).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def image_files(root: Path) -> tuple[list[str], list[int]]:
    """Paths and labels of an ImageFolder tree, as ``ImageFolder`` numbers the classes."""
    from torchvision.datasets import ImageFolder

    try:
        samples = ImageFolder(str(root)).samples
    except (FileNotFoundError, OSError) as error:
        raise ConfigError(f"--data-root {root}: {error}. Give a folder with one sub-folder of JPEGs per class.") from None
    return [path for path, _ in samples], [label for _, label in samples]


class DecodeOnly(Dataset):
    """Read and decode whole; deliver only the size, so no pixels travel between processes."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        import simplejpeg

        with open(self.paths[index], "rb") as file:
            return torch.tensor(simplejpeg.decode_jpeg(file.read()).shape)


def device_row(settings: BenchSettings) -> str:
    return f"ours, decode on {settings.torch_device.type}"


def device_decoder(settings: BenchSettings) -> Callable:
    """Decodes a batch of the device-decode row on ``--device`` (nvJPEG on a GPU), as the data
    module's ``on_before_batch_transfer`` does."""
    from resnet_lab.data.device_decode import decode_batch

    def decode(batch):
        return decode_batch(batch[0], batch[2], size=settings.image_size, in_chans=3, device=settings.torch_device)

    return decode


def build_loaders(paths, labels, settings: BenchSettings, workers: int) -> dict[str, DataLoader]:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    from resnet_lab.data.fast_images import (
        CropPlan,
        EpochSeededSampler,
        FastImageDataset,
        FileSource,
    )

    size, batch = settings.image_size, settings.batch_size
    plan = CropPlan(size, round(size / 0.875))
    ours = FastImageDataset(FileSource(paths, labels), plan, train=True, seed=settings.seed)
    sampler = EpochSeededSampler(ours, num_replicas=1, rank=0, shuffle=True, seed=settings.seed, drop_last=True)
    ten_line = v2.Compose([
        v2.RandomResizedCrop(size), v2.RandomHorizontalFlip(), v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    root = str(Path(paths[0]).parent.parent)
    common = {"batch_size": batch, "num_workers": workers, "drop_last": True, "persistent_workers": workers > 0}
    loaders = {"ours": DataLoader(ours, sampler=sampler, **common)}
    if settings.jpeg_levers:
        from resnet_lab.bench.jpeg_levers import lever_loaders

        loaders.update(lever_loaders(paths, labels, plan, seed=settings.seed, mean=IMAGENET_MEAN, std=IMAGENET_STD, common=common))
    if settings.decode_on_device:
        from resnet_lab.data.device_decode import collate_encoded

        encoded = FastImageDataset(FileSource(paths, labels), plan, train=True, seed=settings.seed, decode_on_device=True)
        loaders[device_row(settings)] = DataLoader(encoded, sampler=sampler, collate_fn=collate_encoded, **common)
    loaders["ten-line"] = DataLoader(ImageFolder(root, transform=ten_line), shuffle=True, **common)
    loaders["decode-only"] = DataLoader(DecodeOnly(paths), shuffle=True, **common)
    return loaders


def _batches(loader: DataLoader):
    """Batches without end, epoch after epoch."""
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def time_block(make_loader: Callable[[], DataLoader], settings: BenchSettings, finish: Callable | None = None) -> Block:
    """A fresh loader, ``warmup`` untimed batches, then ``steps`` timed ones (each through
    ``finish``, when given, with the device synchronized at the end). The loader's workers are
    persistent (an epoch boundary inside the block does not restart them) and end with it,
    before the next loader's block."""
    loader = make_loader()
    batches = _batches(loader)
    for _ in range(settings.warmup):
        batch = next(batches)
        if finish is not None:
            finish(batch)
    synchronize(settings.torch_device)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(settings.steps):
        batch = next(batches)
        if finish is not None:
            finish(batch)
    synchronize(settings.torch_device)
    block = Block(settings.steps * settings.batch_size, time.perf_counter() - wall, time.process_time() - cpu, None)
    batches.close()
    del batches, loader, batch  # the last references: the workers shut down here
    return block


def _alternate(names: list[str], make: Callable[[str], DataLoader], settings: BenchSettings, repeat: int, blocks: dict) -> None:
    finishers = {device_row(settings): device_decoder(settings)} if settings.decode_on_device else {}
    for name in names if repeat % 2 == 0 else reversed(names):
        blocks[name].append(time_block(functools.partial(make, name), settings, finishers.get(name)))


def compare_jpeg_loaders(settings: BenchSettings) -> SectionResult:
    with tempfile.TemporaryDirectory(prefix="resnet_lab_jpeg_") as scratch:
        root = Path(settings.data_root) if settings.data_root else write_photo_tree(Path(scratch), settings.jpeg_images, settings.seed, settings.photo_scale)
        paths, labels = image_files(root)
        if len(paths) < settings.batch_size:
            raise ConfigError(f"--data-root {root} holds {len(paths)} images, fewer than one batch of {settings.batch_size}.")
        names = list(build_loaders(paths, labels, settings, workers=0))

        def make(workers: int) -> Callable[[str], DataLoader]:
            return lambda name: build_loaders(paths, labels, settings, workers=workers)[name]

        cpu_blocks: dict[str, list[Block]] = {name: [] for name in names}
        worker_blocks: dict[str, list[Block]] = {name: [] for name in names}
        threads = torch.get_num_threads()
        for repeat in range(settings.repeats):
            torch.set_num_threads(1)  # as in a DataLoader worker
            try:
                _alternate(names, make(0), settings, repeat, cpu_blocks)
            finally:
                torch.set_num_threads(threads)
            _alternate(names, make(settings.loader_workers), settings, repeat, worker_blocks)
    built = f"scikit-learn sample photos, ~{450 * settings.photo_scale}x{340 * settings.photo_scale} crops, q90"
    details = {"images": len(paths), "data_root": settings.data_root or built}
    cpu = {name: Measurement.from_blocks("jpeg", f"{name}, 1 process", blocks, None, **details) for name, blocks in cpu_blocks.items()}
    workers = {
        name: Measurement.from_blocks("jpeg", f"{name}, {settings.loader_workers} workers", blocks, None, **details)
        for name, blocks in worker_blocks.items()
    }
    ratios = [
        Ratio.paired("jpeg", cpu["ours"], cpu["ten-line"], target=CPU_COST_TARGET, basis="cpu_time"),
        Ratio.paired("jpeg", workers["ours"], workers["ten-line"], target=THROUGHPUT_TARGET),
        Ratio.paired("jpeg", cpu["ours"], cpu["decode-only"], basis="cpu_time"),
    ]
    for lever in (name for name in cpu if name not in ("ours", "ten-line", "decode-only")):
        ratios += [
            Ratio.paired("jpeg", cpu[lever], cpu["ours"], basis="cpu_time"),
            Ratio.paired("jpeg", workers[lever], workers["ours"]),
        ]
    costs = ", ".join(f"{name} {1000 / m.images_per_cpu_s['median']:.2f}" for name, m in cpu.items())
    notes = [
        f"jpeg: CPU cost per delivered sample, ms (median): {costs}",
        "jpeg: 'ours' delivers uint8 batches; its float conversion and normalization run on the training device",
    ]
    return SectionResult(measurements=[*cpu.values(), *workers.values()], ratios=ratios, notes=notes)
