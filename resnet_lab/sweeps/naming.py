"""The resolver that names an Optuna sweep's directory after the command that started it, so
that running the same command again finds the study and continues it."""

from __future__ import annotations

import hashlib
from typing import Any


def sweep_key(*, _root_: Any) -> str:
    """8 hex digits of a hash of the run's task overrides (order-independent).

    Use it in ``hydra.sweep.dir``; a job of the sweep must be given the resolved directory
    (the sweeper does this), since a job's overrides also hold its trial's parameters.
    """
    overrides = _root_.hydra.overrides.task
    text = "\n".join(sorted(str(item) for item in overrides))
    return hashlib.sha1(text.encode()).hexdigest()[:8]
