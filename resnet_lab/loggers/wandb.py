"""Weights & Biases: Lightning's logger, offline unless credentials are found, one W&B run per
Hydra job that is finished when the job ends or fails, and the same W&B run continued when a
run directory is resumed."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from resnet_lab.errors import ConfigError
from resnet_lab.loggers.run_ids import logger_run_id, run_name_and_group

log = logging.getLogger("resnet_lab")

# The file in a run directory that holds its W&B run id, so that a resumed run (same
# directory) continues the same W&B run.
WANDB_ID_FILE = "wandb_id"


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
        default_name, default_group = run_name_and_group(run_dir)
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
            # W&B's ids are 8 characters of [a-z0-9].
            id=logger_run_id(run_dir, WANDB_ID_FILE, length=8),
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
