"""A multirun's figures and results table, written into its directory when its jobs are done.

An experiment config names ``MultirunReport`` under ``hydra.callbacks`` (conf/experiment/
degradation_cpu.yaml); Hydra calls it once every job of the multirun has returned, in the
launching process, so one command trains the jobs and leaves the figure and the table. The
same files come from the runs viewer at any time (``python -m resnet_lab.runs plot``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from resnet_lab.errors import UserError
from resnet_lab.runs.discovery import iter_jobs
from resnet_lab.runs.plot import TRAIN_ACC, VAL_ACC, check_output, plot_runs, run_labels
from resnet_lab.runs.run import Run
from resnet_lab.runs.tables import format_duration

log = logging.getLogger("resnet_lab")

TEST_ACC = "test/acc_top1"


def _error(run: Run, metric: str) -> str:
    value = run.final(metric)
    return "-" if value is None else f"{100.0 * (1.0 - value):.2f}"


def results_table(runs: Sequence[Run]) -> str:
    """Markdown: final training, validation and test error (%) and wall time of each run."""
    lines = [
        "| job | run | training error (%) | validation error (%) | test error (%) | epochs | wall time |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run, label in zip(runs, run_labels(runs)):
        done, planned = run.epochs
        lines.append(
            f"| {run.path.name} | {label} | {_error(run, TRAIN_ACC)} | {_error(run, VAL_ACC)} | "
            f"{_error(run, TEST_ACC)} | {done or 0}/{planned or '-'} | {format_duration(run.wall_time_s)} |"
        )
    return "\n".join(lines) + "\n"


class MultirunReport(Callback):
    """At the end of a multirun, draw ``figures`` and write ``table`` into the sweep directory.

    Args:
        figures: file name without suffix -> metrics to plot (shell patterns allowed), or
            None for the training and validation error of ``runs plot`` (He et al. 2015,
            Figure 6 style).
        image_format: the figures' suffix: png, pdf, svg, ...
        table: file name of the Markdown table of final errors and wall times (None: none).
    """

    def __init__(self, figures: Mapping[str, Sequence[str] | None] | None = None,
                 image_format: str = "png", table: str | None = "results.md") -> None:
        self.figures = {
            check_output(Path(f"{name}.{image_format}")).name: list(metrics) if metrics else None
            for name, metrics in (figures or {}).items()
        }  # a bad format fails before the jobs run, not after
        self.table = table

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = list(iter_jobs(sweep_dir)) if sweep_dir.is_dir() else []
        if not runs:
            return
        for name, metrics in self.figures.items():
            try:
                warnings = plot_runs(runs, metrics, sweep_dir / name)
            except UserError as error:  # e.g. the jobs logged no such metric
                log.warning("no %s: %s", name, error)
                continue
            for warning in warnings:
                log.warning("%s: %s", name, warning)
            log.info("wrote %s", sweep_dir / name)
        if self.table:
            table = results_table(runs)
            (sweep_dir / self.table).write_text(table)
            log.info("wrote %s:\n%s", sweep_dir / self.table, table)
