"""The runs viewer: reads run directories from disk (``python -m resnet_lab.runs``)."""

from resnet_lab.runs.run import Run, RunNotFoundError, find_runs, resolve_run

__all__ = ["Run", "RunNotFoundError", "find_runs", "resolve_run"]
