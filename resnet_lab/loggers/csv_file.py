"""Lightning's CSV logger, made safe for a run that resumes in its own directory.

Lightning 2.6's ``CSVLogger`` *deletes* ``metrics.csv`` when its directory already holds
files ("Previous log files in this directory will be deleted", ``_ExperimentWriter.
_check_log_dir_exists``), and rewrites the whole file in place whenever a new metric name
appears. A resumed run (same directory) would lose the history of everything before the
interruption, and a kill during a rewrite would lose all of it.

This logger appends instead: the existing rows stay byte for byte, the header is extended
when new metrics appear (rewritten to a temporary file and renamed over the old one), and
the ``hparams.yaml`` of the first start is kept (the resuming command's config is in
``.hydra/resumes/``). Rows of steps that the interrupted process logged after its last
checkpoint stay too: the resumed run logs those steps again, so a step can appear twice,
and the later row is the resumed run's.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingExperimentWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._hparams_existed = os.path.isfile(os.path.join(log_dir, self.NAME_HPARAMS_FILE))
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = [key for key in header if key]

    def _check_log_dir_exists(self) -> None:
        """Keep what is there (Lightning's writer deletes metrics.csv here)."""

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as file:
            rows = list(csv.DictReader(file))
        temp = f"{self.metrics_file_path}.{os.getpid()}.tmp"
        with open(temp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temp, self.metrics_file_path)

    def log_hparams(self, params: dict[str, Any]) -> None:
        if self._hparams_existed:
            self.hparams.update(params)
            return
        super().log_hparams(params)


class CSVLogger(_CSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to an existing ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
