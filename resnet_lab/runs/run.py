"""One run directory as the viewer sees it: its record, config, overrides and metric history.

Everything is read from files (``run.json``, ``.hydra/``, ``csv/metrics.csv`` or the
TensorBoard event files), so it works offline, on copied run directories, and on runs still
going (the record and the CSV are read as they are at that moment).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from resnet_lab.errors import UserError

RECORD = "run.json"
# The directory names under outputs/ that group runs; a run's id leaves them out.
GROUP_DIRS = ("runs", "multiruns", "sweeps")
# A run whose process lives on another machine cannot be checked; if its record has not
# changed for this long it is taken to be dead (records are rewritten every epoch).
STALE_AFTER_S = 24 * 3600

STATUSES = ("running", "finished", "failed", "interrupted", "pruned", "unknown")


class RunNotFoundError(UserError):
    """A RUN argument that names no run, or more than one."""


def _load_yaml(path: Path) -> Any:
    try:
        with path.open() as handle:
            return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return None


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def process_alive(pid: int, command: str) -> bool | None:
    """Whether process ``pid`` is alive and runs ``command`` (None: cannot tell)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    except OSError:
        return None
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no procfs (macOS): alive is all we know
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = (proc / "cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
    except (OSError, IndexError):
        return None
    if state == "Z":  # exited, not yet reaped by its parent
        return False
    # A reused pid runs something else: compare the arguments after the program name.
    _, _, args = command.partition(" ")
    if not args or argv == [""]:  # no arguments to compare, or exec still under way
        return True
    return " ".join(argv).endswith(args)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


_HYDRA_RESOLVER = re.compile(r"\$\{hydra:([^}]+)\}")


def _resolve(raw: Any, node: Any) -> Any:
    """``raw`` (the container as written) with each value resolved where ``node`` can."""
    if isinstance(raw, dict):
        keys = raw.keys()
    elif isinstance(raw, list):
        keys = range(len(raw))
    else:
        return raw
    out = {} if isinstance(raw, dict) else [None] * len(raw)
    for key in keys:
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - e.g. a resolver of another program: keep the text
            out[key] = raw[key]
            continue
        out[key] = _resolve(raw[key], value) if isinstance(value, (DictConfig, ListConfig)) else value
    return out


def load_saved_config(path: Path, hydra_node: dict[str, Any]) -> dict[str, Any]:
    """A saved ``.hydra/config.yaml`` with its interpolations resolved where possible.

    ``${hydra:...}`` is answered from the run's own ``.hydra/hydra.yaml`` (that resolver
    exists only inside a Hydra app); anything still unresolvable is kept as written.
    """
    text = path.read_text()
    if hydra_node:
        lookup_from = OmegaConf.create(hydra_node)

        def lookup(match: re.Match) -> str:
            found = OmegaConf.select(lookup_from, match.group(1).strip(), default=None)
            return str(found) if found is not None else match.group(0)

        text = _HYDRA_RESOLVER.sub(lookup, text)
    config = OmegaConf.create(text)
    return _resolve(OmegaConf.to_container(config, resolve=False), config)


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


class Run:
    """A run directory: anything with ``.hydra/config.yaml`` or ``run.json``."""

    def __init__(self, path: Path, root: Path | None = None) -> None:
        self.path = Path(path).resolve()
        self.root = root

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def id(self) -> str:
        """The path below the root, without the ``runs/``, ``multiruns/``, ``sweeps/`` level."""
        if self.root is not None:
            try:
                parts = self.path.relative_to(self.root.resolve()).parts
            except ValueError:
                parts = ()
            if parts and parts[0] in GROUP_DIRS and len(parts) > 1:
                parts = parts[1:]
            if parts:
                return "/".join(parts)
        parent = self.path.parent
        return self.path.name if parent.name in GROUP_DIRS else f"{parent.name}/{self.path.name}"

    @cached_property
    def record(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / RECORD).read_text())
        except (OSError, ValueError):
            return {}

    @cached_property
    def hydra(self) -> dict[str, Any]:
        loaded = _load_yaml(self.path / ".hydra" / "hydra.yaml")
        return (loaded or {}).get("hydra", {}) if isinstance(loaded, dict) else {}

    @cached_property
    def overrides(self) -> list[str]:
        loaded = _load_yaml(self.path / ".hydra" / "overrides.yaml")
        return [str(item) for item in loaded] if isinstance(loaded, list) else []

    @cached_property
    def config(self) -> dict[str, Any]:
        """The run's composed config, interpolations resolved where possible."""
        hydra_node = {**self.hydra, "runtime": {**self.hydra.get("runtime", {}), "output_dir": str(self.path)}}
        try:
            return load_saved_config(self.path / ".hydra" / "config.yaml", hydra_node)
        except Exception:  # noqa: BLE001 - missing or unreadable: an empty config
            return {}

    @cached_property
    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)

    @property
    def choices(self) -> dict[str, Any]:
        return self.hydra.get("runtime", {}).get("choices", {}) or {}

    @property
    def experiment(self) -> str:
        """The experiment config, or for a trial of a hyperparameter search that has none,
        ``hparams_search=<name>`` (what the command line chose)."""
        if self.choices.get("experiment"):
            return str(self.choices["experiment"])
        search = self.choices.get("hparams_search")
        return f"hparams_search={search}" if search else "-"

    @property
    def model(self) -> str:
        return str(self.choices.get("model") or self.flat_config.get("model.name") or "-")

    @property
    def data(self) -> str:
        return str(self.choices.get("data") or "-")

    @property
    def started(self) -> datetime | None:
        stamp = _parse_time(self.record.get("started"))
        if stamp is None:
            try:
                stamp = datetime.fromtimestamp((self.path / ".hydra").stat().st_mtime, timezone.utc)
            except OSError:
                return None
        return stamp

    @property
    def monitor(self) -> str:
        return self.record.get("monitor") or self.flat_config.get("optimized_metric") or "val/acc_top1"

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.record.get("metrics") or {})

    def best(self, metric: str, mode: str = "max") -> float | None:
        """The best value of ``metric`` over the run: the record's when it is the monitor,
        otherwise the extreme of the logged history."""
        best = self.record.get("best") or {}
        if metric in best and self.record.get("monitor") == metric:
            return float(best[metric])
        series = self.history.get(metric)
        if series and series.values:
            values = [v for v in series.values if not math.isnan(v)]
            if values:
                return max(values) if mode == "max" else min(values)
        value = self.metrics.get(metric)
        return float(value) if value is not None else None

    def final(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        return float(value) if value is not None else None

    @cached_property
    def status(self) -> str:
        """running, finished, failed, interrupted, pruned, or unknown (no record yet)."""
        record = self.record
        status = record.get("status")
        if not status:
            log = self.path / "train.log"
            try:
                text = log.read_text(errors="replace")
            except OSError:
                text = ""
            return "failed" if "[ERROR]" in text else "unknown"
        if status in ("running", "trained"):
            return "running" if self._alive() is not False else "interrupted"
        if status == "failed" and str(record.get("exception", "")).startswith("TrialPruned"):
            return "pruned"
        return status

    def _alive(self) -> bool | None:
        record = self.record
        pid, host = record.get("pid"), record.get("host")
        if isinstance(pid, int) and host == socket.gethostname():
            return process_alive(pid, str(record.get("command", "")))
        updated = _parse_time(record.get("updated"))
        if updated is not None and (datetime.now(timezone.utc) - updated).total_seconds() > STALE_AFTER_S:
            return False
        return None

    @property
    def epochs(self) -> tuple[int | None, int | None]:
        return self.record.get("epochs_done"), self.record.get("epochs_planned")

    @property
    def wall_time_s(self) -> float | None:
        value = self.record.get("wall_time_s")
        return float(value) if value is not None else None

    @cached_property
    def history(self) -> dict[str, Series]:
        """Every logged metric: from ``csv/metrics.csv``, else from TensorBoard events."""
        csv_path = self.path / "csv" / "metrics.csv"
        if csv_path.is_file():
            return _read_csv_history(csv_path)
        if any(self.path.rglob("events.out.tfevents.*")):
            return _read_tensorboard_history(self.path)
        return {}

    @cached_property
    def provenance(self) -> dict[str, Any]:
        """Git commit, package versions and device, as the loggers recorded them."""
        for name in ("csv/hparams.yaml", "tensorboard/hparams.yaml"):
            loaded = _load_yaml(self.path / name)
            if isinstance(loaded, dict) and isinstance(loaded.get("provenance"), dict):
                return loaded["provenance"]
        return {}


def is_run_dir(path: Path) -> bool:
    return (path / RECORD).is_file() or (path / ".hydra" / "config.yaml").is_file()


def find_runs(root: Path) -> list[Run]:
    """Every run directory under ``root`` (single runs, multirun jobs, sweep trials)."""
    root = Path(root)
    runs = []
    if not root.is_dir():
        return runs
    for directory, subdirs, _ in os.walk(root):
        path = Path(directory)
        if is_run_dir(path):
            runs.append(Run(path, root))
            subdirs[:] = []  # a run's own folders (checkpoints, csv, wandb) hold no runs
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    return runs


def _candidates(argument: str, runs: list[Run]) -> list[Run]:
    exact = [run for run in runs if argument in (run.id, run.path.name)]
    if exact:
        return exact
    return [run for run in runs if run.id.startswith(argument) or run.path.name.startswith(argument)]


def resolve_run(argument: str, root: Path) -> Run:
    """A RUN argument: a run directory's path, or an id (or unique id prefix) under ``root``."""
    path = Path(argument).expanduser()
    if path.is_dir() and is_run_dir(path):
        return Run(path, root if _is_under(path, root) else None)
    runs = find_runs(root)
    found = _candidates(argument.rstrip("/"), runs)
    if len(found) == 1:
        return found[0]
    if not found:
        hint = ", ".join(run.id for run in runs[-5:]) or "none"
        raise RunNotFoundError(
            f"no run {argument!r}: it is neither a run directory nor the id of a run under "
            f"{str(root)!r} (latest ids: {hint}). Give a path to a run directory, an id from "
            "`python -m resnet_lab.runs list`, or --root where the runs are."
        )
    raise RunNotFoundError(
        f"{argument!r} matches {len(found)} runs under {str(root)!r}: "
        f"{', '.join(run.id for run in found[:8])}{' ...' if len(found) > 8 else ''}. "
        "Give more of the id."
    )


def resolve_dir(argument: str, root: Path) -> Path:
    """A directory argument (a sweep): a path, or a path below ``root`` or its group dirs."""
    for candidate in (Path(argument).expanduser(), root / argument,
                      *(root / group / argument for group in GROUP_DIRS)):
        if candidate.is_dir():
            return candidate
    matches = [p for group in GROUP_DIRS for p in sorted((root / group).glob(f"{argument}*")) if p.is_dir()]
    if len(matches) == 1:
        return matches[0]
    raise RunNotFoundError(
        f"no sweep directory {argument!r} (looked for it as a path and under {str(root)!r}"
        f"{'; it matches ' + ', '.join(str(m) for m in matches) if matches else ''}). "
        "Give the sweep directory printed by the multirun, e.g. outputs/multiruns/<id>."
    )


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def iter_jobs(sweep_dir: Path, root: Path | None = None) -> Iterator[Run]:
    """The job directories of one multirun, in job-number order."""
    jobs = [Run(p, root) for p in Path(sweep_dir).iterdir() if p.is_dir() and is_run_dir(p)]
    yield from sorted(jobs, key=lambda run: (not run.path.name.isdigit(), int(run.path.name)
                                             if run.path.name.isdigit() else 0, run.path.name))
