"""A Hydra sweeper that runs an Optuna study: ``python -m resnet_lab -m hparams_search=NAME``.

Why not hydra-optuna-sweeper: its last release (1.3.0) pins ``optuna<3``, and optuna 2.10
cannot open SQLite storage under SQLAlchemy 2 (``create_study(storage='sqlite:///...')``
fails with an AssertionError in ``get_current_version``), so its studies cannot be stored
and resumed; it never hands the trial to the job, so it cannot prune; and it stops the
sweep at the first failed trial unless told otherwise.

This one asks Optuna (any version >= 4) for trials and launches each through Hydra's
launcher as an ordinary job, so every launcher works (basic, joblib, submitit):

- the study lives in ``<sweep dir>/optuna.db`` (SQLite) under a fixed name, and the sweep
  directory is named after the command (``conf/hparams_search``), so running the same
  command again continues the study: only the trials still missing are run;
- ``n_trials`` counts trials that ended (complete, pruned or failed); a trial left running
  by a sweep that was killed is marked failed and its parameters are tried again;
- a job that raises ``optuna.TrialPruned`` (see ``OptunaPruning``) is a pruned trial, one
  that raises anything else a failed trial, and the sweep goes on;
- each trial runs in ``<sweep dir>/<trial number>/``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from resnet_lab.errors import ConfigError
from resnet_lab.run_dir import MULTIRUN_FILE
from resnet_lab.sweeps.search_space import parse_search_space, quote, trial_overrides

log = logging.getLogger("resnet_lab")

STUDY_FILE = "optuna.db"
RESULTS_FILE = "optimization_results.yaml"


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        *,
        params: DictConfig | dict[str, Any] | None = None,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        study_name: str | None = None,
        storage: str | None = None,
        sampler: DictConfig | dict[str, Any] | None = None,
        enqueue: ListConfig | list[dict[str, Any]] | None = None,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={direction!r}; use maximize or minimize.")
        if not isinstance(n_trials, int) or n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={n_trials!r}; use a positive integer, e.g. 20.")
        if not isinstance(n_jobs, int) or n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs={n_jobs!r}; use a positive integer (trials launched "
                              "together; more than 1 needs a parallel launcher such as hydra/launcher=joblib).")
        self.params = {str(k): v for k, v in (params or {}).items()}
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.study_name = study_name
        self.storage = storage
        self.sampler_config = sampler
        self.enqueue = [OmegaConf.to_container(e) if isinstance(e, DictConfig) else dict(e) for e in enqueue or []]
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- the study --------------------------------------------------------------------------

    def _sampler(self, n_existing: int):
        if not self.sampler_config:
            return None
        config = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(self.sampler_config), resolve=True))
        # A resumed study must not replay the first run's random draws: offset the seed by
        # the number of trials already in the study (the same for the same history).
        if config.get("seed") is not None and n_existing:
            config.seed = int(config.seed) + n_existing
        return instantiate(config)

    def _open_study(self, sweep_dir: Path, command: list[str]):
        import optuna

        storage = self.storage or f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"
        name = self.study_name or sweep_dir.name
        study = optuna.create_study(storage=storage, study_name=name, direction=self.direction,
                                    load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise ConfigError(
                f"the study {name!r} in {storage} maximizes/minimizes the other way "
                f"({study.direction.name.lower()}); hydra.sweeper.direction={self.direction}. "
                "Use the study's direction, or a new hydra.sweep.dir for a new study."
            )
        stored = study.user_attrs.get("command")
        if stored is None:
            study.set_user_attr("command", command)
        elif sorted(stored) != sorted(command):
            raise ConfigError(
                f"{sweep_dir} holds a study started with other overrides:\n  {' '.join(stored)}\n"
                f"this command has:\n  {' '.join(command)}\nRun the same command to continue that "
                "study, or set hydra.sweep.dir to a new directory for a new one."
            )
        sampler = self._sampler(len(study.trials))
        if sampler is not None:
            study.sampler = sampler
        return study, storage

    def _recover_interrupted(self, study) -> set[int]:
        """Fail the trials a killed sweep left running, and queue their parameters again.

        Returns the numbers of all trials ever interrupted: they do not count as done.
        """
        from optuna.trial import TrialState

        from resnet_lab.run_dir import process_alive

        interrupted = set(study.user_attrs.get("interrupted_trials", []))
        host = socket.gethostname()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get("sweeper") or {}
            if owner.get("host") != host:
                log.warning("trial %d is running on %s; leaving it alone", trial.number, owner.get("host"))
                continue
            if owner.get("pid") == os.getpid() or process_alive(int(owner.get("pid", -1)), owner.get("command", "")):
                continue
            log.warning("trial %d was left running by a sweep that stopped; running its parameters again",
                        trial.number)
            interrupted.add(trial.number)
            study.set_user_attr("interrupted_trials", sorted(interrupted))
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        return interrupted

    # -- the sweep --------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        assert self.config is not None and self.launcher is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / MULTIRUN_FILE)

        space, fixed = parse_search_space([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        if not space:
            raise ConfigError("the Optuna sweeper has nothing to search: set hydra.sweeper.params "
                              "(see conf/hparams_search/) or give a sweep such as optimizer.lr=interval(0.01,0.5).")
        study, storage = self._open_study(sweep_dir, list(arguments))
        interrupted = self._recover_interrupted(study)
        for params in self.enqueue:
            ignored = sorted(set(params) - set(space))
            if ignored:
                log.warning("hydra.sweeper.enqueue: %s not searched (fixed by an override?); "
                            "the queued trial uses the fixed value", ", ".join(ignored))
            study.enqueue_trial(params, skip_if_exists=True)
        log.info("Optuna study %r in %s: %s %s over %s", study.study_name, storage, self.direction,
                 self.config.get("optimized_metric"), ", ".join(space))

        # Each job gets the resolved sweep directory (its own overrides would name another)
        # and its trial directory, numbered like the trial.
        pinned = [f"hydra.sweep.dir={quote(str(sweep_dir))}"]
        handle = [f"++optuna_trial.storage={quote(storage)}",
                  f"++optuna_trial.study_name={quote(study.study_name)}"]
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv)}
        ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        while True:
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in ended and t.number not in interrupted for t in trials)
            elsewhere = sum(t.state == TrialState.RUNNING for t in trials)
            remaining = self.n_trials - done - elsewhere
            if remaining <= 0:
                break
            batch = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            jobs = []
            for trial in batch:
                trial.set_user_attr("sweeper", owner)
                trial.set_user_attr("job_dir", str(sweep_dir / str(trial.number)))
                jobs.append([*fixed, *trial_overrides(trial.params), *handle,
                             f"++optuna_trial.number={trial.number}", *pinned,
                             f"hydra.sweep.subdir={trial.number}"])
            self.validate_batch_is_legal(jobs)
            returns = self.launcher.launch(jobs, initial_job_idx=batch[0].number)
            for trial, job in zip(batch, returns):
                self._tell(study, trial, job)
        self._report(study, sweep_dir, interrupted)

    def _tell(self, study, trial, job) -> None:
        import optuna
        from optuna.trial import TrialState

        try:
            value = job.return_value
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned: %s", trial.number, pruned)
            return
        except Exception as error:  # noqa: BLE001 - a failed trial; the sweep goes on
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed (%s: %s); the sweep goes on", trial.number,
                        type(error).__name__, error)
            return
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d returned %r, not a finite number; recorded as failed", trial.number,
                        job.return_value)
            return
        study.tell(trial, value)
        best = study.best_trial
        log.info("trial %d: %s = %.4g (best: trial %d, %.4g)", trial.number,
                 self.config.get("optimized_metric"), value, best.number, best.value)

    def _report(self, study, sweep_dir: Path, interrupted: set[int]) -> None:
        from optuna.trial import TrialState

        trials = [t for t in study.get_trials(deepcopy=False) if t.number not in interrupted]
        counts = {state.name.lower(): sum(t.state == state for t in trials)
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        summary = ", ".join(f"{n} {name}" for name, n in counts.items())
        if not counts["complete"]:
            raise RuntimeError(f"none of the trials in {sweep_dir} completed ({summary}); "
                               f"see the train.log of each trial directory in {sweep_dir}.")
        best = study.best_trial
        results = {"name": "optuna", "study": study.study_name, "best_trial": best.number,
                   "best_value": best.value, "best_params": best.params, "trials": counts}
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        log.info("sweep done (%s); best trial %d: %.4g with %s\n  python -m resnet_lab.runs sweep %s",
                 summary, best.number, best.value, " ".join(trial_overrides(best.params)), sweep_dir)
