"""Finding runs: every run directory under a root, a RUN argument, a sweep directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from resnet_lab.errors import UserError
from resnet_lab.run_dir import GROUP_DIRS, is_run_dir
from resnet_lab.runs.run import Run


class RunNotFoundError(UserError):
    """A RUN argument that names no run, or more than one."""


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
    """A sweep directory argument: a path, or a path below ``root`` or its group dirs (or a
    unique start of one). It must hold the job directories of a multirun."""
    found = next((c for c in (Path(argument).expanduser(), root / argument,
                              *(root / group / argument for group in GROUP_DIRS)) if c.is_dir()), None)
    if found is None and "/" not in argument and not Path(argument).is_absolute():
        matches = [p for group in GROUP_DIRS for p in sorted((root / group).glob(f"{argument}*")) if p.is_dir()]
        found = matches[0] if len(matches) == 1 else None
    else:
        matches = []
    if found is None:
        raise RunNotFoundError(
            f"no sweep directory {argument!r} (looked for it as a path and under {str(root)!r}"
            f"{'; it matches ' + ', '.join(str(m) for m in matches) if matches else ''}). "
            "Give the sweep directory printed by the multirun, e.g. outputs/multiruns/<id>."
        )
    if not any(p.is_dir() and is_run_dir(p) for p in found.iterdir()):
        raise RunNotFoundError(
            f"{found} holds no jobs of a multirun (no job directories with run.json or .hydra/). "
            "Give the sweep directory printed by the multirun, e.g. outputs/multiruns/<id>."
        )
    return found


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
