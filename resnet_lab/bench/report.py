"""The printed table and the JSON file of a benchmark run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from resnet_lab.bench.results import SectionResult
from resnet_lab.bench.settings import BenchSettings

SCHEMA_VERSION = 1


def _memory(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def describe(settings: BenchSettings) -> str:
    return (
        f"device {settings.device}, precision {settings.precision}, "
        f"{'channels_last' if settings.channels_last else 'NCHW'}, {'compiled' if settings.compile else 'eager'}, "
        f"batch {settings.batch_size} x {settings.in_chans}x{settings.image_size}x{settings.image_size}, "
        f"{settings.warmup} warm-up + {settings.steps} timed steps x {settings.repeats} blocks per path"
    )


def format_table(payload: dict[str, Any]) -> str:
    """The report as text: measurements, ratios, then the machine."""
    rows = [("section", "measurement", "images/s", "min .. max", "peak MB")]
    for m in payload["measurements"]:
        rate = m["images_per_s"]
        rows.append(
            (m["section"], m["name"], f"{rate['median']:,.1f}", f"{rate['min']:,.1f} .. {rate['max']:,.1f}", _memory(m["peak_memory_mb"]))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    align = ("<", "<", ">", ">", ">")
    lines = [f"resnet_lab.bench: {payload['description']}", ""]
    for row in rows:
        lines.append("  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths)))
    if payload["ratios"]:
        lines += ["", "ratios (median of paired blocks)"]
        for r in payload["ratios"]:
            verdict = ""
            if r["target"] is not None:
                verdict = f"  target >= {r['target']:g}: {'met' if r['meets_target'] else 'NOT met'}"
            basis = " (by process CPU time)" if r["basis"] == "cpu_time" else ""
            lines.append(
                f"  {r['numerator']} / {r['denominator']}{basis}: {r['value']:.3f}"
                f"  (blocks {min(r['samples']):.3f} .. {max(r['samples']):.3f}){verdict}"
            )
    kinds = {m["memory_kind"] for m in payload["measurements"]} - {None}
    if kinds:
        lines += ["", "peak MB: " + ", ".join(sorted(kinds))]
    for note in payload["notes"]:
        lines.append(f"note: {note}")
    machine = payload["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    load = payload.get("load_average", {})
    lines += [
        "",
        f"device: {machine['device']} ({machine['device_name']})",
        f"CPU: {machine['cpu']}, {machine['cpu_cores']} cores, {machine['torch_threads']} torch threads",
        f"load average (1, 5, 15 min) before {load.get('before')}, after {load.get('after')}",
        f"{packages}; python {machine['python']}",
        f"wall time {payload['wall_time_s']:.1f} s",
    ]
    return "\n".join(lines)


def build_payload(
    settings: BenchSettings, result: SectionResult, *, machine: dict, command: list[str],
    load_average: dict, wall_time_s: float,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "description": describe(settings),
        "settings": settings.to_dict(),
        "machine": machine,
        "load_average": load_average,
        "measurements": [m.to_dict() for m in result.measurements],
        "ratios": [r.to_dict() for r in result.ratios],
        "notes": result.notes,
        "wall_time_s": round(wall_time_s, 3),
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
