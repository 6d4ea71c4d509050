"""Names and ids that tie an experiment logger's run to a run directory, so that a resumed run
(same directory) continues the same W&B or MLflow run."""

from __future__ import annotations

import secrets
import string
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from resnet_lab.run_dir import atomic_write_text


def logger_run_id(run_dir: Path, file_name: str, *, length: int) -> str:
    """The id kept in ``<run_dir>/<file_name>``; a new random one (lowercase letters and
    digits) written there the first time."""
    path = run_dir / file_name
    try:
        existing = path.read_text().strip()
    except OSError:
        existing = ""
    if existing:
        return existing
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))
    if rank_zero_only.rank == 0:
        atomic_write_text(path, run_id + "\n")
    return run_id


def run_name_and_group(run_dir: Path) -> tuple[str, str | None]:
    """``<id>`` for a single run (``runs/<id>``); ``<sweep>/<job>`` grouped by sweep otherwise."""
    if run_dir.parent.name == "runs":
        return run_dir.name, None
    return f"{run_dir.parent.name}/{run_dir.name}", run_dir.parent.name
