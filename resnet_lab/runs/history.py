"""A run's metric history, read from ``csv/metrics.csv`` or its TensorBoard event files."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from resnet_lab.run_dir import METRICS_CSV


@dataclass
class Series:
    """One metric over a run: ``epochs[i]`` (1-based, completed epochs) and ``steps[i]``."""

    epochs: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def per_epoch(self) -> bool:
        return len(set(self.epochs)) == len(self.epochs)


def _read_csv_history(path: Path) -> dict[str, Series]:
    history: dict[str, Series] = {}
    try:
        text = path.read_text()
    except OSError:
        return history
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return history
    header = rows[0]
    complete = rows[1:] if text.endswith("\n") else rows[1:-1]  # a row still being written
    # metric -> step -> (epoch, value). A resumed run logs again the steps after its last
    # checkpoint; the later value of a step wins.
    points: dict[str, dict[int, tuple[int, float]]] = {}
    for row in complete:
        if len(row) != len(header):
            continue
        cells = dict(zip(header, row))
        try:
            epoch = int(float(cells.get("epoch") or 0))
            step = int(float(cells.get("step") or 0))
        except ValueError:
            continue
        for key, cell in cells.items():
            if key in ("epoch", "step") or cell == "":
                continue
            try:
                points.setdefault(key, {})[step] = (epoch + 1, float(cell))
            except ValueError:
                continue
    for key, by_step in points.items():
        series = history[key] = Series()
        for step in sorted(by_step):
            epoch, value = by_step[step]
            series.epochs.append(epoch)
            series.steps.append(step)
            series.values.append(value)
    return history


def _read_tensorboard_history(directory: Path) -> dict[str, Series]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history: dict[str, Series] = {}
    for events_dir in sorted({p.parent for p in directory.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = accumulator.Tags().get("scalars", [])
        epoch_at = {e.step: int(e.value) for e in accumulator.Scalars("epoch")} if "epoch" in tags else {}
        for tag in tags:
            if tag == "epoch":
                continue
            series = history.setdefault(tag, Series())
            for event in accumulator.Scalars(tag):
                series.epochs.append(epoch_at.get(event.step, 0) + 1)
                series.steps.append(event.step)
                series.values.append(float(event.value))
    return history


def read_history(run_dir: Path) -> dict[str, Series]:
    """Every logged metric: from ``csv/metrics.csv``, else from TensorBoard events."""
    csv_path = run_dir / METRICS_CSV
    if csv_path.is_file():
        return _read_csv_history(csv_path)
    if any(run_dir.rglob("events.out.tfevents.*")):
        return _read_tensorboard_history(run_dir)
    return {}
