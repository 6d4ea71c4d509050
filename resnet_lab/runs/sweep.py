"""The jobs of one multirun ranked by the optimized metric: Hydra grids and Optuna sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from resnet_lab.run_dir import MULTIRUN_FILE
from resnet_lab.runs.discovery import iter_jobs
from resnet_lab.runs.run import Run, load_yaml
from resnet_lab.runs.tables import format_duration, format_number

STUDY_FILE = "optuna.db"
# Overrides the sweeper adds to each trial (the handle the pruning callback reports to).
TRIAL_HANDLE = "optuna_trial."


def _user_overrides(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith(TRIAL_HANDLE)]


def _direction(multirun: dict[str, Any], metric: str, jobs: list[Run]) -> str:
    direction = ((multirun.get("hydra") or {}).get("sweeper") or {}).get("direction")
    if isinstance(direction, str):
        return "min" if direction.lower().startswith("min") else "max"
    for job in jobs:
        checkpoint = job.flat_config
        if checkpoint.get("callbacks.model_checkpoint.monitor") == metric:
            return str(checkpoint.get("callbacks.model_checkpoint.mode") or "max")
    return "min" if any(word in metric for word in ("loss", "error", "time")) else "max"


def study_trials(sweep_dir: Path) -> tuple[str | None, dict[int, dict[str, Any]]]:
    """The Optuna study kept in the sweep directory, if any: its name and, per trial number,
    state, value and params (read with Optuna's own storage API)."""
    path = Path(sweep_dir) / STUDY_FILE
    if not path.is_file():
        return None, {}
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{path.resolve()}"
    names = optuna.get_all_study_names(storage)
    if not names:
        return None, {}
    study = optuna.load_study(study_name=names[0], storage=storage)
    trials = {
        trial.number: {"state": trial.state.name, "value": trial.value, "params": trial.params,
                       "user_attrs": trial.user_attrs}
        for trial in study.get_trials(deepcopy=False)
    }
    return study.study_name, trials


_TRIAL_STATUS = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}


def sweep_data(sweep_dir: Path, root: Path | None = None) -> dict[str, Any]:
    sweep_dir = Path(sweep_dir)
    multirun = load_yaml(sweep_dir / MULTIRUN_FILE) or {}
    jobs = list(iter_jobs(sweep_dir, root))
    metric = multirun.get("optimized_metric") or next(
        (job.flat_config.get("optimized_metric") for job in jobs if job.flat_config.get("optimized_metric")),
        "val/acc_top1",
    )
    direction = _direction(multirun, metric, jobs)
    study_name, trials = study_trials(sweep_dir)
    rows = []
    for job in jobs:
        status = job.status
        trial = trials.get(int(job.path.name)) if job.path.name.isdigit() else None
        if trial is not None:
            state = _TRIAL_STATUS.get(trial["state"], trial["state"].lower())
            # The study knows a trial's end; the run directory knows a killed one.
            if not (status == "interrupted" and state in ("failed", "running")):
                status = state
        rows.append({
            "job": job.path.name,
            "id": job.id,
            "path": str(job.path),
            "status": status,
            "value": job.best(metric, direction),
            "epochs_done": job.epochs[0],
            "epochs_planned": job.epochs[1],
            "wall_time_s": job.wall_time_s,
            "overrides": _user_overrides(job.overrides),
        })

    def rank_key(row: dict[str, Any]) -> tuple:
        value = row["value"]
        missing = value is None
        signed = 0.0 if missing else (-value if direction == "max" else value)
        return (row["status"] != "finished", missing, signed)

    rows.sort(key=rank_key)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank if row["status"] == "finished" and row["value"] is not None else None
    common = [o for o in rows[0]["overrides"] if all(o in row["overrides"] for row in rows)] if rows else []
    for row in rows:
        row["varied"] = [o for o in row["overrides"] if o not in common]
    return {
        "sweep_dir": str(sweep_dir),
        "metric": metric,
        "direction": direction,
        "study": study_name,
        "counts": counts,
        "common_overrides": common,
        "jobs": rows,
    }


def sweep_renderables(data: dict[str, Any]) -> list[Any]:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(data["counts"].items()))
    header = (f"[bold]{data['sweep_dir']}[/]: {len(data['jobs'])} jobs ({counts or 'none yet'}); "
              f"ranked by best {data['metric']} ({data['direction']})")
    if data["study"]:
        header += f"; Optuna study {data['study']!r} in {STUDY_FILE}"
    if data["common_overrides"]:
        header += "\nevery job: " + " ".join(data["common_overrides"])
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for heading, justify in (("rank", "right"), ("job", "right"), ("status", "left"),
                             (data["metric"], "right"), ("epochs", "right"), ("wall time", "right"),
                             ("overrides", "left")):
        table.add_column(heading, justify=justify)
    for row in data["jobs"]:
        table.add_row(
            str(row["rank"]) if row["rank"] else "-", row["job"], row["status"],
            format_number(row["value"]), f"{row['epochs_done'] or 0}/{row['epochs_planned'] or '-'}",
            format_duration(row["wall_time_s"]), " ".join(row["varied"]),
        )
    out: list[Any] = [header, table]
    best = next((row for row in data["jobs"] if row["rank"] == 1), None)
    if best is not None:
        out.append(f"best: job {best['job']} ({format_number(best['value'])}); rerun it alone with\n"
                   f"  python -m resnet_lab {' '.join(best['overrides'])}")
    return out
