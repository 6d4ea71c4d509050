"""``--profile DIR``: where the time of one training step goes, in our path and in the plain loop.

For each path, after a warm-up block: one block of timed steps under ``torch.profiler``
(operators on CPU and, on a GPU, kernels; a Chrome trace) and one under ``cProfile`` (Python
functions, grouped by package; CPU time on a CPU, wall time on a GPU). Profilers slow Python down, Python-heavy code (the
framework) most, so the shares overstate the framework's cost; the unprofiled ratio of the
``train`` section is the measure, this is the explanation.
"""

from __future__ import annotations

import copy
import cProfile
import io
import pstats
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity

from resnet_lab.bench.lightning_path import LightningPath
from resnet_lab.bench.plain_loop import PlainLoop
from resnet_lab.bench.settings import BenchSettings
from resnet_lab.bench.workload import build_net, prepare

# Host calls that wait for the GPU: each one stalls the CPU until queued kernels finish.
SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
PACKAGES = ("lightning", "torchmetrics", "resnet_lab", "torch")


def package_of(filename: str, function: str) -> str:
    """Which package a cProfile entry belongs to; C functions count as ``torch (C++)`` when torch's."""
    if filename == "~":
        return "torch (C++)" if "torch" in function or "_C." in function else "python builtins"
    parts = Path(filename).parts
    for package in PACKAGES:
        if package in parts:
            return package
    return "other python"


def python_breakdown(profile: cProfile.Profile, steps: int) -> tuple[dict[str, float], str]:
    """Own time per step (ms) by package, and the top functions by own time as text."""
    stats = pstats.Stats(profile)
    by_package: dict[str, float] = defaultdict(float)
    for (filename, _, function), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[package_of(filename, function)] += tottime * 1000 / steps
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(30)
    return dict(sorted(by_package.items(), key=lambda kv: -kv[1])), text.getvalue()


def operator_tables(profiler: torch.profiler.profile, on_gpu: bool) -> str:
    averages = profiler.key_averages()
    tables = [averages.table(sort_by="self_cpu_time_total", row_limit=25)]
    if on_gpu:
        tables.append(averages.table(sort_by="self_device_time_total", row_limit=25))
    return "\n\n".join(tables)


def synchronizations(profiler: torch.profiler.profile) -> int:
    return sum(event.count for event in profiler.key_averages() if event.key in SYNC_EVENTS)


def profile_training(settings: BenchSettings, out_dir: Path) -> str:
    """Profile both training paths of ``settings.model``; write the files, return a summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    on_gpu = settings.torch_device.type == "cuda"
    net = build_net(settings.model, settings)
    paths = {
        "lightning": LightningPath(net, settings),
        "plain": PlainLoop(prepare(copy.deepcopy(net), settings), settings),
    }
    steps = settings.steps
    lines = [f"profile of {steps} training steps of {settings.model}, files in {out_dir}", ""]
    breakdowns = {}
    for name, path in paths.items():
        path.run(settings.warmup, steps)  # compilation, allocator and caches settle
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        operators = torch.profiler.profile(activities=activities)
        block = path.run(1, steps, profilers=[operators])
        (out_dir / f"{name}_operators.txt").write_text(operator_tables(operators, on_gpu))
        operators.export_chrome_trace(str(out_dir / f"{name}_trace.json"))
        # On a CPU, charge functions with CPU time: wall time would also charge them with the
        # time the process waited for a core. On a GPU, waiting for the device is the point.
        python = cProfile.Profile(time.process_time if not on_gpu else time.perf_counter)
        path.run(1, steps, profilers=[python])
        breakdown, top = python_breakdown(python, steps)
        (out_dir / f"{name}_python.txt").write_text(top)
        breakdowns[name] = breakdown
        averages = operators.key_averages()
        top_ops = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:8]
        lines.append(
            f"{name}: {block.seconds * 1000 / steps:.1f} ms/step under torch.profiler"
            + (
                f", {synchronizations(operators)} host-device synchronizations in {steps} steps"
                " (the one closing the timed window included)"
                if on_gpu else ""
            )
        )
        lines.append("  top operators by own CPU time (ms/step): " + ", ".join(
            f"{e.key} {e.self_cpu_time_total / 1000 / steps:.2f}" for e in top_ops
        ))
    packages = sorted({key for breakdown in breakdowns.values() for key in breakdown})
    clock = "wall" if on_gpu else "CPU"
    lines += ["", f"cProfile own {clock} time per step by package (ms): lightning | plain"]
    for package in packages:
        ours, theirs = (breakdowns[name].get(package, 0.0) for name in ("lightning", "plain"))
        lines.append(f"  {package:<16} {ours:9.2f} | {theirs:9.2f}")
    lines.append(
        "  total            "
        + " | ".join(f"{sum(breakdowns[name].values()):9.2f}" for name in ("lightning", "plain"))
    )
    summary = "\n".join(lines)
    (out_dir / "summary.txt").write_text(summary + "\n")
    return summary
