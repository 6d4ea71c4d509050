"""The rows and tables of ``list``, ``show`` and ``compare``: plain data first (for --json),
rendered with rich."""

from __future__ import annotations

import fnmatch
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from rich import box
from rich.table import Table

from resnet_lab.errors import UserError
from resnet_lab.run_dir import SHOWN_STATUSES
from resnet_lab.runs.run import Run

# What --status accepts: the statuses of run.json as a reader sees them, and a damaged record.
STATUSES = (*SHOWN_STATUSES, "damaged")

ACCURACY = "val/acc_top1"
TEST_ACCURACY = "test/acc_top1"

# (key, heading) of the `list` table, in order; every key is a --sort choice.
LIST_COLUMNS = (
    ("id", "id"),
    ("date", "date"),
    ("task", "task"),
    ("experiment", "experiment"),
    ("model", "model"),
    ("data", "data"),
    ("epochs", "epochs"),
    ("best_val_acc", "best val acc"),
    ("test_acc", "test acc"),
    ("wall_time", "wall time"),
    ("status", "status"),
    ("tags", "tags"),
)
SORT_KEYS = tuple(key for key, _ in LIST_COLUMNS)

_STATUS_STYLE = {"finished": "green", "running": "cyan", "failed": "red", "interrupted": "yellow",
                 "pruned": "magenta", "unknown": "dim", "damaged": "bold red"}


def format_number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}" if abs(value) < 10 else f"{value:.{max(digits - 2, 1)}f}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def run_row(run: Run) -> dict[str, Any]:
    done, planned = run.epochs
    started = run.started
    return {
        "id": run.id,
        "path": str(run.path),
        "date": started.astimezone().strftime("%Y-%m-%d %H:%M") if started else None,
        "task": run.task,
        "experiment": run.experiment,
        "model": run.model,
        "data": run.data,
        "epochs_done": done,
        "epochs_planned": planned,
        "best_val_acc": run.best(ACCURACY),
        "test_acc": run.final(TEST_ACCURACY),
        "wall_time_s": run.wall_time_s,
        "status": run.status,
        "tags": run.tags,
    }


def _sort_value(row: dict[str, Any], key: str) -> Any:
    if key == "epochs":
        return row["epochs_done"]
    if key == "wall_time":
        return row["wall_time_s"]
    if key == "tags":
        return ",".join(row["tags"]) or None
    return row[key]


def select_rows(
    runs: Sequence[Run],
    *,
    experiment: str | None = None,
    model: str | None = None,
    data: str | None = None,
    status: str | None = None,
    tag: str | None = None,
    sort: str = "date",
    reverse: bool = False,
) -> list[dict[str, Any]]:
    """Rows of the runs that match every filter (shell patterns, statuses comma-separated),
    sorted by ``sort``; runs without a value for it come last."""
    if sort not in SORT_KEYS:
        raise UserError(f"cannot sort by {sort!r}; sort by one of: {', '.join(SORT_KEYS)}.")
    statuses = {s.strip() for s in status.split(",")} if status else None
    if statuses and not statuses <= set(STATUSES):
        raise UserError(f"--status {status!r}: statuses are {', '.join(STATUSES)} (comma-separated).")
    rows = []
    for run in runs:
        if experiment and not fnmatch.fnmatchcase(run.experiment, experiment):
            continue
        if model and not fnmatch.fnmatchcase(run.model, model):
            continue
        if data and not fnmatch.fnmatchcase(run.data, data):
            continue
        if statuses and run.status not in statuses:
            continue
        if tag and not any(fnmatch.fnmatchcase(t, tag) for t in run.tags):
            continue
        rows.append(run_row(run))
    present = [row for row in rows if _sort_value(row, sort) is not None]
    missing = [row for row in rows if _sort_value(row, sort) is None]
    present.sort(key=lambda row: _sort_value(row, sort), reverse=reverse)
    return present + missing


def list_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
    for key, heading in LIST_COLUMNS:
        numeric = key in ("epochs", "best_val_acc", "test_acc", "wall_time")
        table.add_column(heading, justify="right" if numeric else "left", no_wrap=key in ("id", "date"))
    for row in rows:
        done, planned = row["epochs_done"], row["epochs_planned"]
        epochs = f"{done if done is not None else '-'}/{planned if planned is not None else '-'}"
        status = row["status"]
        table.add_row(
            row["id"], row["date"] or "-", row["task"], row["experiment"], row["model"], row["data"], epochs,
            format_number(row["best_val_acc"]), format_number(row["test_acc"]),
            format_duration(row["wall_time_s"]),
            f"[{_STATUS_STYLE.get(status, '')}]{status}[/]" if status in _STATUS_STYLE else status,
            ",".join(row["tags"]) or "-",
        )
    return table


def show_data(run: Run) -> dict[str, Any]:
    done, planned = run.epochs
    record = run.record
    return {
        "id": run.id,
        "path": str(run.path),
        "status": run.status,
        "started": record.get("started"),
        "ended": record.get("ended"),
        "epochs_done": done,
        "epochs_planned": planned,
        "wall_time_s": run.wall_time_s,
        "command": record.get("command"),
        "overrides": run.overrides,
        "monitor": run.monitor,
        "best": record.get("best") or {},
        "metrics": run.metrics,
        "exception": record.get("exception"),
        "provenance": run.provenance,
        "config": run.config,
        "task": run.task,
        "tags": run.tags,
        "problems": run.problems,
    }


def show_renderables(data: dict[str, Any]) -> list[Any]:
    """What `show` prints: a summary, the metrics, provenance, then the config as YAML."""
    lines = [
        f"[bold]{data['id']}[/]  {data['path']}",
        f"status [bold]{data['status']}[/] · epochs {data['epochs_done'] or 0}/{data['epochs_planned'] or '-'}"
        f" · wall time {format_duration(data['wall_time_s'])} · started {data['started'] or '-'}",
    ]
    if data["overrides"]:
        lines.append("overrides: " + " ".join(data["overrides"]))
    if data["tags"]:
        lines.append("tags: " + ", ".join(data["tags"]))
    if data["exception"]:
        lines.append(f"[red]exception: {data['exception']}[/]")
    lines += [f"[bold red]damaged: {problem}[/]" for problem in data["problems"]]
    out: list[Any] = ["\n".join(lines)]

    metrics = Table(title="metrics", box=box.SIMPLE_HEAD, header_style="bold", title_justify="left")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    best = data["best"]
    monitor = data["monitor"]
    if monitor in best:
        epoch = best.get("epoch")
        metrics.add_row(f"best {monitor}" + (f" (epoch {epoch + 1})" if isinstance(epoch, int) else ""),
                        format_number(best[monitor]))
    for key in sorted(data["metrics"], key=lambda k: (not k.startswith("test/"), not k.startswith("val/"), k)):
        metrics.add_row(key, format_number(data["metrics"][key]))
    out.append(metrics)

    provenance = data["provenance"]
    if provenance:
        git = provenance.get("git") or {}
        device = provenance.get("device") or {}
        packages = provenance.get("packages") or {}
        parts = []
        if git.get("commit"):
            parts.append(f"git {git['commit'][:12]}{' (uncommitted changes)' if git.get('dirty') else ''}")
        hardware = device.get("gpus") or [device.get("cpu", "?")]
        parts.append(f"device {device.get('accelerator', '?')} x{device.get('devices', '?')}: "
                     f"{', '.join(map(str, hardware))}")
        parts.append(textwrap.fill("packages " + " ".join(f"{k}={v}" for k, v in packages.items()),
                                   width=100, subsequent_indent="  "))
        out.append("provenance:\n  " + "\n  ".join(parts))
    out.append("config:\n" + yaml.safe_dump(data["config"], sort_keys=False, default_flow_style=False).rstrip())
    return out


def _ignored(key: str, value: Any, run: Run) -> bool:
    """Keys that differ between any two runs without meaning anything: where each run
    writes, and the sweeper's trial handle."""
    if key.startswith(("paths.", "optuna_trial.")):
        return True
    return isinstance(value, str) and str(run.path) in value


def differing_keys(runs: Sequence[Run]) -> list[str]:
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.flat_config))
    missing = object()
    differ = []
    for key in keys:
        values = [run.flat_config.get(key, missing) for run in runs]
        if any(value is not missing and _ignored(key, value, run) for value, run in zip(values, runs)):
            continue
        if any(repr(value) != repr(values[0]) for value in values[1:]):
            differ.append(key)
    return differ


def compare_data(runs: Sequence[Run]) -> dict[str, Any]:
    keys = differing_keys(runs)
    metric_keys = sorted({key for run in runs for key in run.metrics},
                         key=lambda k: (not k.startswith("test/"), not k.startswith("val/"), k))
    monitors = sorted({run.monitor for run in runs})
    return {
        "runs": [run.id for run in runs],
        "config": {key: [run.flat_config.get(key) for run in runs] for key in keys},
        "summary": {
            "status": [run.status for run in runs],
            "epochs": [f"{run.epochs[0] or 0}/{run.epochs[1] or '-'}" for run in runs],
            "wall_time_s": [run.wall_time_s for run in runs],
            **{f"best {m}": [run.best(m) for run in runs] for m in monitors},
        },
        "metrics": {key: [run.final(key) for run in runs] for key in metric_keys},
    }


def compare_tables(data: dict[str, Any]) -> list[Table]:
    def table(title: str, rows: dict[str, list[Any]], fmt: Callable[[Any], str]) -> Table:
        out = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", title_justify="left")
        out.add_column("")
        for run_id in data["runs"]:
            out.add_column(run_id, justify="right")
        for key, values in rows.items():
            out.add_row(key, *(fmt(v) for v in values))
        return out

    def fmt_config(value: Any) -> str:
        return "-" if value is None else str(value)

    def fmt_summary(value: Any) -> str:
        return format_number(value) if isinstance(value, float) else fmt_config(value)

    summary = dict(data["summary"])
    summary["wall time"] = [format_duration(v) for v in summary.pop("wall_time_s")]
    tables = []
    if data["config"]:
        tables.append(table("config keys that differ", data["config"], fmt_config))
    else:
        tables.append(Table(title="config: identical (paths aside)", show_edge=False, title_justify="left"))
    tables.append(table("results", {**summary, **data["metrics"]}, fmt_summary))
    return tables
