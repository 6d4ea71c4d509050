"""Section ``data``: the device-resident data path against the torchvision DataLoader path.

The measurement is ``resnet_lab.bench.augmentation.benchmark_augmentation``:
both paths turn the same uint8 images into the same augmented float32 batches on the device
(pad-and-crop, flip, normalize; the same samples in the same order), one with batched tensor
ops on the device, the other with torchvision transforms per image in DataLoader workers
and a host-to-device copy. Called once per repeat, so that each repeat gives one sample of
each path, timed one after the other.
"""

from __future__ import annotations

import torch

from resnet_lab.bench.results import Measurement, Ratio, SectionResult
from resnet_lab.bench.settings import BenchSettings

CROP_PADDING = 4  # pixels: the CIFAR recipe's pad-and-crop (He et al. 2015, section 4.2)


def random_images(settings: BenchSettings, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images of the settings' shape; augmentation costs the same whatever the pixels."""
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (count, settings.in_chans, settings.image_size, settings.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return images, torch.randint(settings.num_classes, (count,), generator=generator)


def compare_data_paths(settings: BenchSettings) -> SectionResult:
    from resnet_lab.bench.augmentation import benchmark_augmentation
    from resnet_lab.data.augment import Normalize, SmallImageAugment

    images, labels = random_images(settings, (settings.warmup + settings.steps) * settings.batch_size)
    normalize = Normalize((0.5,) * settings.in_chans, (0.25,) * settings.in_chans)
    augment = SmallImageAugment(pad=CROP_PADDING, flip=True)
    rates: dict[str, list[float]] = {"device-resident": [], "DataLoader": []}
    for _ in range(settings.repeats):
        timed = benchmark_augmentation(
            images, labels, augment=augment, normalize=normalize, batch_size=settings.batch_size,
            batches=settings.steps, warmup=settings.warmup, device=settings.torch_device, rounds=1,
            seed=settings.seed,
        )
        rates["device-resident"].append(timed["device_resident_images_per_s"])
        rates["DataLoader"].append(timed["dataloader_images_per_s"])
    details = {"augment": repr(augment), "dataloader_workers": timed["dataloader_workers"]}
    resident = Measurement.from_rates("data", "device-resident", rates["device-resident"], **details)
    loader = Measurement.from_rates("data", "DataLoader", rates["DataLoader"], **details)
    return SectionResult(measurements=[resident, loader], ratios=[Ratio.paired("data", resident, loader)])
