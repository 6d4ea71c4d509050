"""Registers resnet_lab's Optuna sweeper with Hydra as ``hydra/sweeper: resnet_lab_optuna``.

Hydra imports every module under the ``hydra_plugins`` namespace package at start-up, so
this module stays light: Optuna is imported when a sweep starts. (No
``from __future__ import annotations``: the scanner runs a module before it is in
``sys.modules``, where dataclasses cannot resolve string annotations.)
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from resnet_lab.sweeps import optuna_sweeper


class ResnetLabOptunaSweeper(optuna_sweeper.OptunaSweeper):
    """resnet_lab.sweeps.optuna_sweeper.OptunaSweeper; Hydra accepts only plugin classes
    defined under ``hydra_plugins``."""


@dataclass
class ResnetLabOptunaSweeperConf:
    _target_: str = "hydra_plugins.resnet_lab_optuna.resnet_lab_optuna_sweeper.ResnetLabOptunaSweeper"
    # The sweeper instantiates the sampler itself (it offsets the seed on resume).
    _recursive_: bool = False
    # Search space in Hydra's sweep syntax: choice(...), range(...), interval(...),
    # tag(log, interval(...)); other values are fixed overrides for every trial.
    params: Optional[dict[str, Any]] = None  # noqa: UP045 - OmegaConf structured configs need Optional
    direction: str = "maximize"
    # Trials that end (complete, pruned or failed) before the sweep stops, counting those
    # of earlier runs of the same command.
    n_trials: int = 20
    # Trials launched together (more than 1 needs a parallel launcher, e.g. joblib).
    n_jobs: int = 1
    # Default: the sweep directory's name.
    study_name: Optional[str] = None  # noqa: UP045 - OmegaConf structured configs need Optional
    # Default: sqlite:///<sweep dir>/optuna.db
    storage: Optional[str] = None  # noqa: UP045 - OmegaConf structured configs need Optional
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0})
    # Parameter sets to try first, e.g. [{optimizer.lr: 0.1}] (a recipe's known-good values).
    enqueue: Any = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper", name="resnet_lab_optuna", node=ResnetLabOptunaSweeperConf, provider="resnet_lab"
)
