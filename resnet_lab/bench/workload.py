"""What every path trains on: the model and the synthetic batches (the optimizer and
schedule come from the training config: ``bench/training_config.py``)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
from torch import nn

from resnet_lab.bench.settings import BenchSettings


def build_net(name: str, settings: BenchSettings) -> nn.Module:
    """One of our models, with initial weights fixed by ``settings.seed``."""
    from resnet_lab.models import build_model

    torch.manual_seed(settings.seed)
    return build_model(name, num_classes=settings.num_classes, in_chans=settings.in_chans)


def prepare(net: nn.Module, settings: BenchSettings) -> nn.Module:
    """Device, memory format and compilation, as ``ImageClassifier.configure_model`` does them."""
    net.to(settings.torch_device)
    if settings.channels_last:
        net.to(memory_format=torch.channels_last)
    if settings.compile:
        net.compile()
    return net


@functools.lru_cache(maxsize=1)
def batch_pool(settings: BenchSettings, size: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` distinct batches on the device, made once per run: (size, N, C, H, W) images
    and (size, N) labels. Each class has a fixed pattern under the noise, so the loss can fall."""
    generator = torch.Generator().manual_seed(settings.seed)
    image_size, channels, classes = settings.image_size, settings.in_chans, settings.num_classes
    patterns = torch.randn(classes, channels, image_size, image_size, generator=generator)
    labels = torch.randint(classes, (size, settings.batch_size), generator=generator)
    images = patterns[labels] + torch.randn(
        size, settings.batch_size, channels, image_size, image_size, generator=generator
    )
    return images.to(settings.torch_device), labels.to(settings.torch_device)


class SyntheticBatches:
    """``length`` batches cycled from the run's ``batch_pool``, already on the device.

    Every pass yields the same batches in the same order. Both training paths read them, so
    their ratio measures the training loop alone (the data paths have a section of their
    own).
    """

    def __init__(self, settings: BenchSettings, length: int) -> None:
        self.images, self.labels = batch_pool(settings)
        self.length = length

    @property
    def batch_size(self) -> int:
        return self.images.shape[1]

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(self.length):
            index = step % len(self.images)
            yield self.images[index], self.labels[index]
