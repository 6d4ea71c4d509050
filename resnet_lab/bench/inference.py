"""Inference throughput: forward passes in eval mode under ``torch.inference_mode``."""

from __future__ import annotations

import torch
from torch import nn

from resnet_lab.bench.settings import BenchSettings
from resnet_lab.bench.timing import Block, PeakMemory, Window
from resnet_lab.bench.workload import SyntheticBatches


def run_inference(net: nn.Module, settings: BenchSettings, memory: PeakMemory, warmup: int, steps: int) -> Block:
    """``warmup`` untimed then ``steps`` timed batches through ``net`` (already prepared)."""
    window = Window(settings.torch_device, memory)
    was_training = net.training
    net.eval()
    with torch.inference_mode(), settings.autocast():
        for step, (images, _) in enumerate(SyntheticBatches(settings, warmup + steps)):
            if settings.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            net(images)
            if step == warmup - 1:
                window.start()
    window.stop()
    net.train(was_training)
    return Block.of(window, steps * settings.batch_size)
