"""The augmentation benchmark (resnet_lab.bench.augmentation) runs both data paths on the same
data and reports comparable numbers."""

from __future__ import annotations

import json

import pytest
import torch

from resnet_lab.bench.augmentation import benchmark_augmentation, main
from resnet_lab.data.augment import Normalize, SmallImageAugment


def test_benchmark_augmentation_times_both_paths():
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (256,))
    result = benchmark_augmentation(
        images, labels, augment=SmallImageAugment(pad=4, flip=True, cutout=8),
        normalize=Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        batch_size=32, batches=4, warmup=1, num_workers=0, rounds=1,
    )
    assert result["device_resident_images_per_s"] > 0 and result["dataloader_images_per_s"] > 0
    assert result["speedup"] == pytest.approx(result["device_resident_images_per_s"] / result["dataloader_images_per_s"])
    assert (result["batch_size"], result["batches"], result["device"]) == (32, 4, "cpu")


def test_command_line_prints_both_rates_and_the_ratio(capsys):
    result = main(["--data", "random-cifar", "--device", "cpu", "--batch-size", "16", "--batches", "2",
                   "--warmup", "1", "--rounds", "1", "--workers", "0"])
    out = capsys.readouterr().out
    assert "device-resident" in out and "DataLoader" in out and "speedup:" in out
    assert json.loads(out.strip().splitlines()[-1]) == result
    assert result["data"] == "random-cifar" and result["batches"] == 2
