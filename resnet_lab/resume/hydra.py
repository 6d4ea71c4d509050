"""Where a training job writes, decided before Hydra writes anything.

``resume_run_dir`` and ``resume_output_subdir`` are the resolvers of ``hydra.run.dir`` and
``hydra.output_subdir`` (conf/hydra/default.yaml): a resumed run goes to its own directory,
and its original ``.hydra/`` files are kept. ``RunDirectoryGuard`` is a Hydra callback that
runs before Hydra creates the job's directory: an existing run directory is never
overwritten, however it was named (``hydra.run.dir``, a re-run ``hydra.sweep.dir``), and the
directory is claimed by this process (``resnet_lab.run_dir.claim``) before any file is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from resnet_lab.distributed import is_global_zero_from_env
from resnet_lab.errors import ConfigError, exit_on_user_error
from resnet_lab.resume.plan import plan_for_config, task_overrides
from resnet_lab.run_dir import (
    HYDRA_DIR,
    LOCK_FILE,
    LOG_FILE,
    RESUMES_DIR,
    claim,
    is_run_dir,
    read_record,
    status_of,
)
from resnet_lab.run_names import run_id


def resume_run_dir(fresh_dir: str, *, _root_: DictConfig) -> str:
    """Resolver of ``hydra.run.dir``: the resumed run's directory, else ``fresh_dir``.
    Bad input is reported here and the process exits with status 2, before anything exists."""
    with exit_on_user_error():
        plan = plan_for_config(_root_, task_overrides(_root_))
    return str(plan.run_dir) if plan.run_dir is not None else fresh_dir


def resume_output_subdir(*, _root_: DictConfig) -> str | None:
    """Resolver of ``hydra.output_subdir``: ``.hydra``; for a resumed run a subdirectory of
    its own, so the run's original ``.hydra/`` files are never rewritten; none on the other
    ranks of a multi-process launch (rank 0 writes the run's files)."""
    from hydra.types import RunMode

    if not is_global_zero_from_env():
        return None
    if OmegaConf.select(_root_, "hydra.mode") == RunMode.MULTIRUN:
        return HYDRA_DIR  # resume and --multirun are refused in prepare_job
    with exit_on_user_error():
        plan = plan_for_config(_root_, task_overrides(_root_))
    return HYDRA_DIR if plan.run_dir is None else f"{RESUMES_DIR}/{run_id('run')}"


def _refuse_existing(run_dir: Path) -> None:
    """A new run needs a new or empty directory. (Other ranks of the same launch may already
    have opened their log file in it: that is allowed.)"""
    if not run_dir.is_dir():
        return
    if is_run_dir(run_dir):
        try:
            status = status_of(read_record(run_dir)).value
        except ConfigError:
            status = "its run.json is damaged"
        raise ConfigError(
            f"{run_dir} already holds a run ({status}). An existing run directory is never "
            f"overwritten: continue that run with resume={run_dir}, or start a new run elsewhere "
            "(leave hydra.run.dir out, or name a new directory)."
        )
    extra = sorted(p.name for p in run_dir.iterdir() if p.name not in (LOG_FILE, LOCK_FILE))
    if extra:
        raise ConfigError(
            f"{run_dir} is not empty ({', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}) and a "
            "new run would write its files among them. Name a new or empty directory for "
            "hydra.run.dir, or leave it out."
        )


def _is_study_sweeper(config: DictConfig) -> bool:
    target = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
    return "resnet_lab_optuna" in target  # continues its study in the same sweep directory


class RunDirectoryGuard(Callback):
    """Hydra callback; see the module docstring."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_global_zero_from_env():
            return  # the other ranks of a launch join rank 0's directory
        with exit_on_user_error():
            run_dir = Path(str(config.hydra.run.dir)).expanduser().resolve()
            if plan_for_config(config, task_overrides(config)).run_dir is None:
                _refuse_existing(run_dir)
            claim(run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_global_zero_from_env() or _is_study_sweeper(config):
            return
        with exit_on_user_error():
            sweep_dir = Path(str(config.hydra.sweep.dir)).expanduser().resolve()
            jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and is_run_dir(p)) if sweep_dir.is_dir() else []
            if jobs:
                raise ConfigError(
                    f"{sweep_dir} already holds the jobs of a multirun ({', '.join(jobs[:5])}"
                    f"{' ...' if len(jobs) > 5 else ''}). Run directories are never overwritten: "
                    "give the new multirun another hydra.sweep.dir (or leave it out), or resume a "
                    f"job on its own with resume={sweep_dir / jobs[0]}."
                )
