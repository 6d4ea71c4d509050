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
    net = build_net(settings.model, settings)  # each path trains a copy of it
    plain = PlainLoop(prepare(copy.deepcopy(net), settings), settings)
    result = SectionResult()
    if "train" in settings.sections:
        paths = {"lightning": LightningPath(copy.deepcopy(net), settings)}
        if settings.progress_bar:
            paths["lightning + progress bar"] = LightningPath(copy.deepcopy(net), settings, progress_bar=True)
        paths["plain"] = plain
        blocks = alternate(paths, settings, lambda path: path.run(settings.warmup, settings.steps))
        measured = {
            name: Measurement.from_blocks(
                "train", f"{settings.model} {name}", blocks[name], plain.memory.kind,
                last_loss=blocks[name][-1].losses[-1],
            )
            for name in paths
        }
        reference = measured["plain"]
        for name in paths:
            if name == "plain":
                continue
            measured[name].details["largest_loss_difference_vs_plain"] = largest_loss_difference(
                blocks[name], blocks["plain"]
            )
            result.ratios.append(Ratio.paired("train", measured[name], reference, target=OVERHEAD_TARGET))
            if settings.torch_device.type == "cpu":
                result.ratios.append(Ratio.paired("train", measured[name], reference, basis="cpu_time"))
        result.measurements += list(measured.values())
    if "infer" in settings.sections:
        memory = PeakMemory(settings.torch_device)
        blocks = [run_inference(plain.net, settings, memory, settings.warmup, settings.steps) for _ in range(settings.repeats)]
        result.measurements.append(Measurement.from_blocks("infer", f"{settings.model} inference", blocks, memory.kind))
    return result
