"""The config a training job runs with and the checkpoint ``fit`` restores."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from resnet_lab.distributed import is_global_zero_from_env
from resnet_lab.errors import ConfigError
from resnet_lab.resume.choice import CheckpointChoice, Note, newest_checkpoint
from resnet_lab.resume.compare import (
    is_runtime_key,
    non_runtime_overrides,
    override_keys,
    task_container,
)
from resnet_lab.resume.migrate import migrate
from resnet_lab.resume.plan import AUTO, AUTO_OR_NEW, ResumePlan, plan_for_config
from resnet_lab.run_dir import CHECKPOINT_DIR, is_run_dir, remove_stale_temporaries, stored_config

log = logging.getLogger("resnet_lab")


@dataclass(frozen=True)
class JobStart:
    cfg: DictConfig
    ckpt_path: str | None
    notes: tuple[Note, ...] = ()


def _apply_runtime_overrides(stored: DictConfig, current: DictConfig, overrides: Sequence[str]) -> None:
    for key in override_keys(overrides):
        if key.startswith("hydra") or not is_runtime_key(key):
            continue
        value = OmegaConf.select(current, key, default=None, throw_on_missing=False)
        if value is None and OmegaConf.select(stored, key, default=None) is None:
            continue
        OmegaConf.update(stored, key, value, merge=False, force_add=True)


def _plan_on_other_rank(resume: str, output_dir: Path, overrides: Sequence[str] | None, trusted: bool) -> ResumePlan:
    """A DDP child started by Lightning only needs the checkpoint: the run's status now
    shows rank 0 running, so the plan is not made again."""
    choice = CheckpointChoice(None)
    if resume not in (AUTO, AUTO_OR_NEW) and Path(resume).is_file():
        choice = CheckpointChoice(Path(resume).resolve())
    elif is_run_dir(output_dir):
        choice = newest_checkpoint(output_dir, trusted=trusted)
    use_stored = resume not in (AUTO, AUTO_OR_NEW) and not non_runtime_overrides(overrides or [])
    return ResumePlan(output_dir if is_run_dir(output_dir) else None, choice.path, use_stored)


def prepare_job(cfg: DictConfig) -> JobStart:
    """Under Hydra the plan was made (and checked) while Hydra chose the run directory;
    here it is looked up again."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    in_hydra = HydraConfig.initialized()
    overrides = list(HydraConfig.get().overrides.task) if in_hydra else None
    resume = cfg.get("resume")
    if resume and in_hydra and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(
            "resume continues one run in its own directory; it cannot be combined with "
            "--multirun. Resume a job of a sweep on its own: resume=<sweep dir>/<job number>."
        )
    trusted = bool(cfg.get("trust_checkpoint", False))
    output_dir = Path(str(cfg.paths.output_dir)).resolve()
    if resume and not is_global_zero_from_env():
        plan = _plan_on_other_rank(str(resume), output_dir, overrides, trusted)
    else:
        plan = plan_for_config(cfg, overrides)
    if plan.run_dir is None:
        ckpt = str(plan.checkpoint) if plan.checkpoint is not None else None
        return JobStart(cfg, ckpt, plan.notes)
    if plan.use_stored_config and overrides is not None:
        job_cfg = OmegaConf.create(migrate(stored_config(plan.run_dir), task_container(cfg)))
        _apply_runtime_overrides(job_cfg, cfg, overrides)
    else:
        job_cfg = cfg.copy()
    OmegaConf.set_readonly(job_cfg, False)
    with _unlocked(job_cfg):
        job_cfg.resume = str(resume)
        job_cfg.ckpt_path = None
        if Path(str(job_cfg.paths.output_dir)).resolve() != plan.run_dir:
            job_cfg.paths.output_dir = str(plan.run_dir)  # train(cfg) called outside Hydra
    removed = remove_stale_temporaries(plan.run_dir / CHECKPOINT_DIR)
    notes = (*plan.notes, *((logging.INFO, f"removed {path.name}, left by a save that was killed") for path in removed))
    return JobStart(job_cfg, str(plan.checkpoint) if plan.checkpoint else None, notes)


class _unlocked:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.struct = OmegaConf.is_struct(cfg)

    def __enter__(self) -> DictConfig:
        OmegaConf.set_struct(self.cfg, False)
        return self.cfg

    def __exit__(self, *exc) -> None:
        OmegaConf.set_struct(self.cfg, self.struct)


def log_notes(notes: Iterable[Note]) -> None:
    for level, message in notes:
        log.log(level, "%s", message)
