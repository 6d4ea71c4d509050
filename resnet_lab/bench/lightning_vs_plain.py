"""Sections ``train`` and ``infer``: one model through our Lightning path and a plain loop.

The two training paths start from the same weights and take the same steps on the same
batches, alternating block by block (A B B A ...) so that machine noise and any drift in
clock speed hit both. Because they do the same work, their losses agree at every step of
every block; the report gives the largest difference as a check.
"""

from __future__ import annotations

import copy

from resnet_lab.bench.inference import run_inference
from resnet_lab.bench.lightning_path import LightningPath
from resnet_lab.bench.plain_loop import PlainLoop
from resnet_lab.bench.results import Measurement, Ratio, SectionResult
from resnet_lab.bench.settings import BenchSettings
from resnet_lab.bench.timing import Block, PeakMemory
from resnet_lab.bench.workload import build_net, prepare

OVERHEAD_TARGET = 0.97  # our path's images/s at least this fraction of the plain loop's (issue 8)


def alternate(paths: dict, settings: BenchSettings, run) -> dict[str, list[Block]]:
    """Run each path ``settings.repeats`` times, alternating, reversing the order every repeat."""
    names = list(paths)
    blocks: dict[str, list[Block]] = {name: [] for name in names}
    for repeat in range(settings.repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            blocks[name].append(run(paths[name]))
    return blocks


def largest_loss_difference(a: list[Block], b: list[Block]) -> float:
    return max(abs(x - y) for block_a, block_b in zip(a, b) for x, y in zip(block_a.losses, block_b.losses))


def run_model_sections(settings: BenchSettings) -> SectionResult:
    net = build_net(settings.model, settings)
    plain = PlainLoop(prepare(copy.deepcopy(net), settings), settings)
    result = SectionResult()
    if "train" in settings.sections:
        ours = LightningPath(net, settings)
        blocks = alternate(
            {"lightning": ours, "plain": plain},
            settings,
            lambda path: path.run(settings.warmup, settings.steps),
        )
        kind = plain.memory.kind
        lightning = Measurement.from_blocks(
            "train", f"{settings.model} lightning", blocks["lightning"], kind,
            last_loss=blocks["lightning"][-1].losses[-1],
        )
        reference = Measurement.from_blocks(
            "train", f"{settings.model} plain", blocks["plain"], kind,
            last_loss=blocks["plain"][-1].losses[-1],
        )
        difference = largest_loss_difference(blocks["lightning"], blocks["plain"])
        lightning.details["largest_loss_difference_vs_plain"] = difference
        result.measurements += [lightning, reference]
        result.ratios.append(Ratio.paired("train", lightning, reference, target=OVERHEAD_TARGET))
        if settings.torch_device.type == "cpu":
            result.ratios.append(Ratio.paired("train", lightning, reference, basis="cpu_time"))
    if "infer" in settings.sections:
        memory = PeakMemory(settings.torch_device)
        blocks = [run_inference(plain.net, settings, memory, settings.warmup, settings.steps) for _ in range(settings.repeats)]
        result.measurements.append(Measurement.from_blocks("infer", f"{settings.model} inference", blocks, memory.kind))
    return result
