"""Experiment loggers: what ``train`` records in each, and two Lightning loggers adjusted for
Hydra jobs.

- ``log_run_hyperparams``: the resolved config plus provenance (git commit, package
  versions, device) as the hyperparameters of every logger.
- ``TensorBoardLogger``: Lightning's, plus the HParams dashboard linking the config to
  chosen metrics (Lightning only writes that dashboard with a placeholder ``hp_metric``).
- ``WandbLogger``: Lightning's, offline unless credentials are found, one W&B run per Hydra
  job that is finished when the job ends or fails, and the same W&B run continued when a
  run directory is resumed.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.fabric.utilities.logger import _sanitize_params as _sanitize_tensorboard_params
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from resnet_lab.errors import ConfigError
from resnet_lab.provenance import provenance

log = logging.getLogger("resnet_lab")

# The file in a run directory that holds its W&B run id, so that a resumed run (same
# directory) continues the same W&B run.
WANDB_ID_FILE = "wandb_id"


@rank_zero_only
def log_run_hyperparams(loggers: Iterable[Logger], cfg: DictConfig, trainer: Any = None) -> None:
    """Record the resolved config and ``provenance`` (under that key) in every logger."""
    loggers = list(loggers)
    if not loggers:
        return
    params = OmegaConf.to_container(cfg, resolve=True)
    params["provenance"] = provenance(trainer)
    for logger in loggers:
        logger.log_hyperparams(params)


def close_loggers(loggers: Iterable[Logger]) -> None:
    """End the loggers' runs once the job's work is done (W&B: ``wandb.finish``).

    Lightning finalizes loggers after ``fit`` and again after ``test``, so the end of the
    job is only known to its caller.
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.finish(exit_code=0)


class TensorBoardLogger(_TensorBoardLogger):
    """Lightning's TensorBoard logger whose HParams dashboard shows ``hparams_metrics``.

    TensorBoard reads each metric's values from the scalars of the same tag, so nothing
    is logged for them up front (Lightning's ``default_hp_metric`` logs a -1 placeholder).
    """

    def __init__(self, save_dir: str, *, hparams_metrics: Sequence[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(save_dir, **kwargs)
        self.hparams_metrics = list(hparams_metrics)

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None) -> None:
        super().log_hyperparams(params, metrics=metrics, step=step)
        if metrics is not None or not self.hparams_metrics:
            return
        from torch.utils.tensorboard.summary import hparams

        flat = self._sanitize_params(_sanitize_tensorboard_params(_flatten_dict(_convert_params(params))))
        writer = self.experiment._get_file_writer()
        for summary in hparams(flat, dict.fromkeys(self.hparams_metrics, 0.0)):
            writer.add_summary(summary)


def wandb_has_credentials() -> bool:
    """Whether W&B would find an API key (environment, settings, ``~/.netrc``) without asking."""
    import wandb

    try:
        return bool(wandb.login(prompt=False, verify=False))
    except TypeError:  # wandb before `prompt=` existed
        return bool(getattr(wandb.api, "api_key", None))


def wandb_mode(offline: bool | None) -> str | None:
    """``offline``/``online`` when the config says so; otherwise ``WANDB_MODE`` if set, else
    online only when credentials are found. None means: leave it to W&B (``WANDB_MODE``)."""
    if offline is not None:
        return "offline" if offline else "online"
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if wandb_has_credentials() else "offline"


def _read_or_create_wandb_id(run_dir: Path) -> str:
    path = run_dir / WANDB_ID_FILE
    try:
        existing = path.read_text().strip()
    except OSError:
        existing = ""
    if existing:
        return existing
    # W&B's own id generator has moved between wandb versions; its ids are 8 characters of
    # [a-z0-9], which this matches.
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(run_id + "\n")
        os.replace(tmp, path)
    return run_id


def _default_name_and_group(run_dir: Path) -> tuple[str, str | None]:
    """``<id>`` for a single run (``runs/<id>``); ``<sweep>/<job>`` grouped by sweep otherwise."""
    if run_dir.parent.name == "runs":
        return run_dir.name, None
    return f"{run_dir.parent.name}/{run_dir.name}", run_dir.parent.name


class WandbLogger(_WandbLogger):
    """Lightning's W&B logger for Hydra jobs.

    Args:
        save_dir: the run directory; W&B writes ``<save_dir>/wandb/``, and the W&B run id is
            kept in ``<save_dir>/wandb_id`` so a resumed run continues the same W&B run.
        project, entity, tags, ...: passed to ``wandb.init``.
        name, group: default to the run directory's name, and for multirun jobs to
            ``<sweep>/<job>`` grouped by the sweep.
        offline: True/False to force; None: offline unless W&B credentials are found (or
            ``WANDB_MODE`` says otherwise). Offline runs are synced later with ``wandb sync``.
        log_model: upload checkpoints as artifacts (online only).
    """

    def __init__(
        self,
        save_dir: str,
        *,
        project: str = "resnet_lab",
        name: str | None = None,
        group: str | None = None,
        offline: bool | None = None,
        log_model: bool | str = False,
        **kwargs: Any,
    ) -> None:
        run_dir = Path(save_dir)
        default_name, default_group = _default_name_and_group(run_dir)
        mode = wandb_mode(offline)
        if log_model and mode == "offline":
            if offline:
                raise ConfigError(
                    "logger.wandb.log_model uploads checkpoints, which an offline W&B run cannot "
                    "do. Set logger.wandb.log_model=false, or logger.wandb.offline=false with "
                    "W&B credentials (`wandb login`)."
                )
            log.warning("W&B runs offline (no credentials found): checkpoints are not uploaded")
            log_model = False
        if mode is not None:
            kwargs["mode"] = mode
        super().__init__(
            name=name or default_name,
            save_dir=save_dir,
            id=_read_or_create_wandb_id(run_dir),
            project=project,
            log_model=log_model,
            group=group or default_group,
            # Lightning's offline=True would set WANDB_MODE in os.environ, which outlives this
            # job and leaks into the next job of a multirun; `mode` is per run.
            offline=False,
            **kwargs,
        )

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            import wandb

            # Lightning's logger reuses any W&B run still open in the process, which in a
            # multirun is the previous job's (wandb logs only one run per multirun unless
            # it is finished).
            if wandb.run is not None and wandb.run.id != self._id:
                log.warning("finishing W&B run %s left open by a previous job", wandb.run.id)
                wandb.run.finish(exit_code=1)
        return super().experiment

    @rank_zero_only
    def finish(self, exit_code: int = 0) -> None:
        if self._experiment is not None:
            self._experiment.finish(exit_code=exit_code)
            self._experiment = None

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status != "success":
            # The job failed or was interrupted: nothing more will be logged.
            self.finish(exit_code=1)
