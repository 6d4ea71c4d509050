"""Experiment loggers: what ``train`` records in each, and Lightning's loggers adjusted for
Hydra jobs (``csv_file``: appends on resume; ``tensorboard``: HParams dashboard; ``wandb``
and ``mlflow``: one run per job, continued on resume)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

from resnet_lab.loggers.csv_file import CSVLogger
from resnet_lab.loggers.mlflow import MLFlowLogger
from resnet_lab.loggers.tensorboard import TensorBoardLogger
from resnet_lab.loggers.wandb import WandbLogger
from resnet_lab.provenance import provenance


def parameter_counts(net: nn.Module) -> dict[str, int]:
    return {
        "total": sum(p.numel() for p in net.parameters()),
        "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad),
    }


@rank_zero_only
def log_run_hyperparams(loggers: Iterable[Logger], cfg: DictConfig, trainer: Any = None,
                        net: nn.Module | None = None) -> None:
    """Record the resolved config, the network's parameter counts (``model_params``) and
    ``provenance`` (git commit, package versions, device) in every logger."""
    loggers = list(loggers)
    if not loggers:
        return
    params = OmegaConf.to_container(cfg, resolve=True)
    if net is not None:
        params["model_params"] = parameter_counts(net)
    params["provenance"] = provenance(trainer)
    for logger in loggers:
        logger.log_hyperparams(params)


def close_loggers(loggers: Iterable[Logger]) -> None:
    """End the loggers' runs once the job's work is done (W&B: ``wandb.finish``).

    Lightning finalizes loggers after ``fit`` and again after ``test``, so the end of the
    job is only known to its caller. (MLflow needs nothing: each finalize marks its run.)
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.finish()


__all__ = [
    "CSVLogger",
    "MLFlowLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "close_loggers",
    "log_run_hyperparams",
    "parameter_counts",
]
