"""MLflow: Lightning's logger, one MLflow run per run directory.

The default tracking store is a local SQLite file under ``paths.log_dir`` (MLflow 3 keeps its
plain-file store in maintenance mode and refuses it by default); ``tracking_uri`` points at a
server instead. The MLflow run id is kept in ``<run dir>/mlflow_run_id``, so a resumed run
continues the same MLflow run, and the parameters it already has are not logged again (MLflow
refuses to change a logged parameter).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger as _MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from resnet_lab.errors import ConfigError
from resnet_lab.loggers.run_ids import run_name_and_group
from resnet_lab.run_dir import atomic_write_text

MLFLOW_ID_FILE = "mlflow_run_id"


class MLFlowLogger(_MLFlowLogger):
    """Args:
    save_dir: the run directory (holds ``mlflow_run_id``).
    tracking_uri: where runs are stored (``sqlite:///...`` or ``http://server:5000``).
    experiment_name: the MLflow experiment (default in the config: ``task_name``).
    tags: a list of labels, stored as MLflow tags ``<label>: "true"``; plus ``group``
        (the sweep) for a job of a multirun.
    artifact_location: where a new experiment keeps artifacts.
    """

    def __init__(self, save_dir: str, *, tracking_uri: str, experiment_name: str = "resnet_lab",
                 run_name: str | None = None, tags: Sequence[str] = (), artifact_location: str | None = None,
                 log_model: bool = False) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError(
                "logger=mlflow needs MLflow's client: pip install 'resnet-lab[mlflow]' (or mlflow-skinny)."
            ) from None
        self.run_dir = Path(save_dir)
        name, group = run_name_and_group(self.run_dir)
        labels = {str(tag): "true" for tag in tags}
        if group:
            labels["group"] = group
        try:
            resumed = (self.run_dir / MLFLOW_ID_FILE).read_text().strip() or None
        except OSError:
            resumed = None
        super().__init__(experiment_name=experiment_name, run_name=run_name or name, tracking_uri=tracking_uri,
                         tags=labels, artifact_location=artifact_location, log_model=log_model, run_id=resumed)
        self.resumed = resumed is not None

    @property
    @rank_zero_experiment
    def experiment(self):
        created = not self._initialized and self._run_id is None
        client = super().experiment
        if created and self._run_id is not None:
            atomic_write_text(self.run_dir / MLFLOW_ID_FILE, self._run_id + "\n")
        return client

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        if self.resumed:
            logged = set(self.experiment.get_run(self.run_id).data.params)
            params = {k: v for k, v in _flatten_dict(_convert_params(params)).items() if k not in logged}
        super().log_hyperparams(params)
