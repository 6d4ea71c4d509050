"""Augmented-batch throughput: the device-resident path against the torchvision DataLoader path.

Both paths start from the same uint8 images, draw the same samples in the same order and
apply the same ``SmallImageAugment`` (pad + random crop, flip, normalize, optional Cutout /
random erasing); both deliver float32 batches on ``device``. Only the way differs: batched
tensor ops on the device, or torchvision transforms per image in DataLoader workers followed
by the host-to-device copy. The first ``warmup`` batches (worker start-up, allocator) are not
timed. ``python -m resnet_lab.bench --sections data`` runs it on random images of the bench's
settings; ``python -m resnet_lab.bench.augmentation --help`` also runs it on the real
Fashion-MNIST files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DataLoader, DistributedSampler

from resnet_lab.data.augment import Normalize, SmallImageAugment
from resnet_lab.data.device_loader import DeviceResidentLoader
from resnet_lab.data.in_memory import UInt8ImageDataset


def _timed(batches: Iterable, count: int, warmup: int, device: torch.device, prepare: Callable) -> float:
    """Seconds for ``count`` batches after ``warmup`` untimed ones, measured on the device's clock."""
    iterator = iter(batches)
    for _ in range(warmup):
        prepare(next(iterator))
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(count):
            prepare(next(iterator))
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000.0
    began = time.perf_counter()
    for _ in range(count):
        prepare(next(iterator))
    return time.perf_counter() - began


def benchmark_augmentation(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    augment: SmallImageAugment,
    normalize: Normalize,
    batch_size: int = 512,
    batches: int = 50,
    warmup: int = 3,
    device: str | torch.device = "cpu",
    num_workers: int | None = None,
    rounds: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Images per second of both paths on the same data and augmentation, and their ratio.

    images: uint8 (N, C, H, W) on the CPU; N must cover ``warmup + batches`` batches.
    num_workers: DataLoader workers; None: one per CPU core this process may use.
    rounds: the paths are timed alternately this many times and the median of each reported,
        so that a machine shared with other work slows both alike.
    """
    device = torch.device(device)
    needed = (warmup + batches) * batch_size
    if len(images) < needed:
        raise ValueError(f"{warmup + batches} batches of {batch_size} need {needed} images, got {len(images)}")
    workers = len(os.sched_getaffinity(0)) if num_workers is None else num_workers
    sampler = DistributedSampler(range(len(labels)), num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=True)

    on_device = DeviceResidentLoader(
        images.to(device), labels.to(device), sampler=sampler, batch_size=batch_size,
        drop_last=True, normalize=normalize, augment=augment,
    )
    dataset = UInt8ImageDataset(images, labels, augment.sample_transform(images.shape[-1], normalize))
    pin = device.type == "cuda"
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=workers,
        pin_memory=pin, persistent_workers=False, prefetch_factor=4 if workers else None,
    )

    def to_device(batch):
        return [tensor.to(device, non_blocking=pin) for tensor in batch]

    device_times, loader_times = [], []
    for _ in range(rounds):
        device_times.append(_timed(on_device, batches, warmup, device, prepare=lambda batch: batch))
        loader_times.append(_timed(loader, batches, warmup, device, prepare=to_device))
    device_seconds, loader_seconds = statistics.median(device_times), statistics.median(loader_times)
    images_timed = batches * batch_size
    return {
        "device_resident_images_per_s": images_timed / device_seconds,
        "dataloader_images_per_s": images_timed / loader_seconds,
        "speedup": loader_seconds / device_seconds,
        "dataloader_workers": workers,
        "batch_size": batch_size,
        "batches": batches,
        "rounds": rounds,
        "device": str(device),
    }


def _data(name: str) -> tuple[torch.Tensor, torch.Tensor, Normalize]:
    if name == "fashion_mnist":
        from resnet_lab.data.fashion_mnist import FashionMnistDataModule

        module = FashionMnistDataModule(root="data/fashion_mnist", download=False, val_size=0)
        images, labels = module.load_split(train=True)
        return images, labels, module.normalize
    if name == "random-cifar":
        # CIFAR's shape and size; augmentation cost does not depend on the pixel values.
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (50_000,), generator=generator)
        from resnet_lab.data.cifar import CIFAR_RELEASES

        return images, labels, Normalize(CIFAR_RELEASES["cifar10"].mean, CIFAR_RELEASES["cifar10"].std)
    raise SystemExit(f"--data must be fashion_mnist or random-cifar, got {name!r}")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m resnet_lab.bench.augmentation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion_mnist", help="fashion_mnist (the real files) or random-cifar")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=50, help="timed batches per path")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per path")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timings per path (median)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: CPU cores)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")
    parser.add_argument("--pad", type=int, default=None, help="crop padding (default: 2 for 28 px, 4 for 32 px)")
    parser.add_argument("--no-flip", action="store_true")
    parser.add_argument("--cutout", type=int, default=0)
    parser.add_argument("--random-erasing", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images, labels, normalize = _data(args.data)
    pad = args.pad if args.pad is not None else (2 if images.shape[-1] == 28 else 4)
    augment = SmallImageAugment(pad=pad, flip=not args.no_flip, cutout=args.cutout, random_erasing=args.random_erasing)
    result = benchmark_augmentation(
        images, labels, augment=augment, normalize=normalize, batch_size=args.batch_size,
        batches=args.batches, warmup=args.warmup, device=args.device, num_workers=args.workers,
        rounds=args.rounds,
    )
    result = {"data": args.data, "augment": repr(augment), "torch_threads": torch.get_num_threads(), **result}
    print(f"{'path':<18}{'images/s':>14}")
    print(f"{'device-resident':<18}{result['device_resident_images_per_s']:>14,.0f}")
    print(f"{'DataLoader':<18}{result['dataloader_images_per_s']:>14,.0f}   ({result['dataloader_workers']} workers)")
    print(f"speedup: {result['speedup']:.1f}x on {result['device']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
