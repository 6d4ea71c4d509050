"""Section ``torchvision``: forward+backward images/s of our ResNets against torchvision's.

Same architecture, same weights (torchvision's state dict is loaded into ours, the names
being the paper's in both), same batches, same precision and memory format, measured
alternately. The forward outputs of the two are compared on one batch first, so a ratio is
never reported for two networks that compute different things.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab.bench.lightning_vs_plain import alternate
from resnet_lab.bench.results import Measurement, Ratio, SectionResult
from resnet_lab.bench.settings import BenchSettings
from resnet_lab.bench.timing import Block, PeakMemory, Window
from resnet_lab.bench.workload import SyntheticBatches, build_net, prepare

SPEED_TARGET = 1.0  # ours at least as fast as torchvision's (issue 3)


def forward_backward(net: nn.Module, settings: BenchSettings, memory: PeakMemory, warmup: int, steps: int) -> Block:
    """Training-mode forward, cross-entropy and backward; no optimizer step."""
    window = Window(settings.torch_device, memory)
    net.train()
    for step, (images, labels) in enumerate(SyntheticBatches(settings, warmup + steps)):
        if settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with settings.autocast():
            loss = F.cross_entropy(net(images).float(), labels)
        loss.backward()
        net.zero_grad(set_to_none=True)
        if step == warmup - 1:
            window.start()
    window.stop()
    return Block.of(window, steps * settings.batch_size)


def same_function(ours: nn.Module, theirs: nn.Module, settings: BenchSettings) -> float:
    """Load torchvision's weights into ours; return the largest output difference on one batch."""
    ours.load_state_dict(theirs.state_dict())
    images, _ = next(iter(SyntheticBatches(settings, 1)))
    ours.eval(), theirs.eval()
    with torch.no_grad():
        return (ours(images) - theirs(images)).abs().max().item()


def compare_with_torchvision(settings: BenchSettings) -> SectionResult:
    import torchvision

    result = SectionResult()
    for name in settings.compare_models:
        torch.manual_seed(settings.seed)
        theirs = torchvision.models.get_model(name, weights=None, num_classes=settings.num_classes)
        ours = build_net(name, settings)
        ours.to(settings.torch_device), theirs.to(settings.torch_device)
        difference = same_function(ours, theirs, settings)
        nets = {"ours": prepare(ours, settings), "torchvision": prepare(theirs, settings)}
        memory = PeakMemory(settings.torch_device)
        timed = functools.partial(forward_backward, settings=settings, memory=memory, warmup=settings.warmup, steps=settings.steps)
        blocks = alternate(nets, settings, timed)
        params = sum(p.numel() for p in ours.parameters())
        mine = Measurement.from_blocks(
            "torchvision", f"{name} ours", blocks["ours"], memory.kind,
            parameters=params, largest_output_difference_vs_torchvision=difference,
        )
        reference = Measurement.from_blocks(
            "torchvision", f"{name} torchvision", blocks["torchvision"], memory.kind,
            parameters=sum(p.numel() for p in theirs.parameters()),
        )
        result.measurements += [mine, reference]
        result.ratios.append(Ratio.paired("torchvision", mine, reference, target=SPEED_TARGET))
        if settings.torch_device.type == "cpu":
            result.ratios.append(Ratio.paired("torchvision", mine, reference, basis="cpu_time"))
    return result
