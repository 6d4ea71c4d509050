"""The runs viewer: reads run directories from disk (``python -m resnet_lab.runs``)."""

from resnet_lab.runs.discovery import RunNotFoundError, find_runs, resolve_run
from resnet_lab.runs.run import Run

__all__ = ["Run", "RunNotFoundError", "find_runs", "resolve_run"]
