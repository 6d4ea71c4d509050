"""The reference: the same training steps as our Lightning path, in a plain PyTorch loop.

Written from scratch, not through ``ImageClassifier``: what it shares with our path is what a
user's own loop would share (the network, the batches, the optimizer with its parameter
groups, the schedule, the loss, the precision), so the throughput ratio is our overhead.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab.bench.settings import BenchSettings
from resnet_lab.bench.timing import Block, PeakMemory, Window
from resnet_lab.bench.training_config import module_options, optimizer_factory, scheduler_factory
from resnet_lab.bench.workload import SyntheticBatches
from resnet_lab.module import param_groups


class PlainLoop:
    """Trains ``net`` (already prepared: device, memory format, compiled) one block at a time."""

    def __init__(self, net: nn.Module, settings: BenchSettings, *, label_smoothing: float | None = None) -> None:
        self.net = net
        self.settings = settings
        options = module_options()
        self.label_smoothing = options["label_smoothing"] if label_smoothing is None else label_smoothing
        self.decay_norm_and_bias = options["decay_norm_and_bias"]
        self.memory = PeakMemory(settings.torch_device)

    def run(self, warmup: int, steps: int, *, profilers: Sequence[AbstractContextManager] = ()) -> Block:
        """``warmup`` untimed steps then ``steps`` timed ones, with a fresh optimizer and schedule.

        ``profilers`` are entered and exited at the boundaries of the timed steps.
        """
        settings, net = self.settings, self.net
        total = warmup + steps
        factory = optimizer_factory(settings.batch_size)
        optimizer = factory(param_groups(net, factory.keywords["weight_decay"], self.decay_norm_and_bias))
        scheduler = scheduler_factory()(optimizer, total_steps=total, steps_per_epoch=float(total))
        scaler = torch.amp.GradScaler(settings.torch_device.type) if settings.precision == "16-mixed" else None
        window = Window(settings.torch_device, self.memory, profilers)
        losses = []
        net.train()
        for step, (images, labels) in enumerate(SyntheticBatches(settings, total)):
            if settings.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with settings.autocast():
                logits = net(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            losses.append(loss.detach())
            if step == warmup - 1:
                window.start()
        window.stop()
        return Block.of(window, steps * settings.batch_size, torch.stack(losses).tolist())
