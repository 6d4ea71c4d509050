"""Pruning for Optuna sweeps, inside the training job: report the monitored metric to the
trial every epoch, and stop the job (``optuna.TrialPruned``) when the pruner says so.

The sweeper gives each job its trial as ``optuna_trial.{storage,study_name,number}``
overrides; the search-space configs pass them here (``trial: ${oc.select:optuna_trial,null}``).
The job raises rather than stopping quietly, so that the sweeper can tell a pruned trial
from a finished one (Hydra hands the exception back in the job's return).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning as L

from resnet_lab.errors import ConfigError

log = logging.getLogger("resnet_lab")


class OptunaPruning(L.Callback):
    """Args:
    monitor: the metric reported after every validation (``${optimized_metric}``).
    pruner: an ``optuna.pruners.BasePruner``; steps are epochs (0-based), so a
        MedianPruner's ``n_warmup_steps`` is the number of epochs never pruned.
    trial: ``{storage, study_name, number}`` from the sweeper; None outside a sweep
        (nothing is reported then).
    """

    def __init__(self, monitor: str, pruner: Any = None, trial: Mapping[str, Any] | None = None) -> None:
        self.monitor = monitor
        self.pruner = pruner
        self.handle = dict(trial) if trial else None
        self._trial = None

    def _open_trial(self):
        import optuna

        study = optuna.load_study(
            study_name=self.handle["study_name"], storage=self.handle["storage"], pruner=self.pruner
        )
        number = int(self.handle["number"])
        # Optuna hands Trial objects only to the process that asked for them; a job in
        # another process (or on another machine) reopens its trial from the storage.
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        return optuna.trial.Trial(study, trial_id)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.handle is None:
            log.warning("hparams_search takes effect in multirun mode only (add -m); "
                        "this single run is not part of a study and is not pruned")
            return
        if trainer.is_global_zero:
            self._trial = self._open_trial()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.handle is None:
            return
        prune = False
        if trainer.is_global_zero and self._trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise ConfigError(f"callbacks.optuna_pruning.monitor={self.monitor!r} was never "
                                  f"logged. Logged metrics: {', '.join(sorted(trainer.callback_metrics))}")
            value = float(value)
            epoch = trainer.current_epoch
            if math.isfinite(value):
                self._trial.report(value, step=epoch)
            prune = self._trial.should_prune() or not math.isfinite(value)
        # Every rank must stop together, or the others wait forever in the next collective.
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            import optuna

            message = f"trial {self.handle['number']} pruned after epoch {trainer.current_epoch + 1}"
            log.info(message)
            raise optuna.TrialPruned(message)
