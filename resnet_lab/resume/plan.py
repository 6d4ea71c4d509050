"""What a job starts from: a new run, or which run directory and checkpoint it continues.

``resume=<run dir>`` / ``<checkpoint in a run>`` / ``auto`` / ``auto_or_new`` and
``ckpt_path=<file>`` are checked against the files on disk here, before Hydra creates or
touches any run directory (docs/RELIABILITY.md, "Resume").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resnet_lab.checkpoint_files import load_checkpoint_file
from resnet_lab.errors import ConfigError
from resnet_lab.resume.choice import (
    CheckpointChoice,
    Note,
    check_checkpoint_fits_model,
    newest_checkpoint,
    read_training_checkpoint,
)
from resnet_lab.resume.compare import (
    config_differences,
    format_differences,
    non_runtime_overrides,
    task_container,
)
from resnet_lab.resume.migrate import migrate
from resnet_lab.run_dir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    HYDRA_DIR,
    LAST_CHECKPOINT,
    DamagedFile,
    Status,
    diverged,
    is_run_dir,
    read_record,
    record_alive,
    status_of,
    stored_config,
)

AUTO = "auto"
AUTO_OR_NEW = "auto_or_new"


@dataclass(frozen=True)
class ResumePlan:
    """What a job starts from.

    run_dir: the run directory to continue; None for a new run.
    checkpoint: the file ``fit`` restores from; None to start at step 0.
    use_stored_config: run with the resumed run's own ``.hydra/config.yaml`` (plus the
        command's runtime overrides) rather than the composed config.
    notes: what was decided and why, logged once the job's logging is set up.
    """

    run_dir: Path | None = None
    checkpoint: Path | None = None
    use_stored_config: bool = False
    notes: tuple[Note, ...] = field(default_factory=tuple)


def _record(run_dir: Path) -> dict[str, Any]:
    try:
        return read_record(run_dir)
    except DamagedFile:
        return {}  # the checkpoints decide; a damaged record is rewritten by the resumed run


def _same_slurm_job(record: Mapping[str, Any]) -> bool:
    """Whether the record was written by an earlier run of this very SLURM job (requeued)."""
    job = os.environ.get("SLURM_JOB_ID")
    return bool(job) and str(record.get("slurm_job_id", "")) == job


def check_resumable(run_dir: Path) -> list[str]:
    """Refuse a run that finished or whose process still runs; return warnings for the log.

    A record that says "running" but whose process is gone (SIGKILL, a lost machine) is
    resumable; one whose process lives on another machine cannot be checked, and is resumed
    (this function is only reached for an explicitly named run) with a warning.
    """
    record = _record(run_dir)
    status = status_of(record) if record else Status.UNKNOWN
    if status is Status.FINISHED:
        raise ConfigError(
            f"run {str(run_dir)!r} finished ({record.get('ended', 'time unknown')}); there is "
            "nothing to resume. To train on from its weights and optimizer state with a new "
            "config (e.g. more epochs), start a new run with "
            f"ckpt_path={run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT}."
        )
    if status is Status.PRUNED:
        raise ConfigError(f"run {str(run_dir)!r} was pruned by its sweep; there is nothing to resume.")
    warnings = []
    if record.get("status") in (Status.RUNNING, Status.TRAINED) and not _same_slurm_job(record):
        alive = record_alive(record)
        if alive:
            raise ConfigError(
                f"run {str(run_dir)!r} is still running (pid {record.get('pid')} on this machine). "
                "Resuming it now would have two processes write one run directory. Stop it first "
                f"(kill {record.get('pid')}: on SIGTERM it saves a checkpoint and exits) or wait."
            )
        if alive is None and status is Status.RUNNING:
            warnings.append(
                f"run {run_dir} says it is running on {record.get('host')} (pid "
                f"{record.get('pid')}, last update {record.get('updated', '?')}), which cannot be "
                "checked from here; resuming it as asked. Make sure that process is gone."
            )
    if diverged(record):
        warnings.append(
            f"run {run_dir} stopped because its loss diverged; with the same settings it will "
            "probably diverge again (docs/RELIABILITY.md, Divergence)"
        )
    return warnings


def runs_under(log_dir: Path) -> list[Path]:
    runs = log_dir / "runs"
    if not runs.is_dir():
        return []
    return sorted(path for path in runs.iterdir() if path.is_dir() and is_run_dir(path))


def _resolve_target(resume: str, log_dir: Path) -> tuple[Path, Path | None]:
    """``(run dir, checkpoint or None)`` for ``resume=<run dir or checkpoint>``."""
    target = Path(resume).expanduser()
    if not target.is_absolute():
        target = Path.cwd() / target
    if not target.exists():
        raise ConfigError(
            f"resume={resume!r}: no such run directory or checkpoint. Give a run directory "
            f"(e.g. {log_dir / 'runs' / '<run id>'}), a checkpoint inside one, or resume=auto; "
            "`python -m resnet_lab.runs list` shows the runs."
        )
    if target.is_dir():
        if not is_run_dir(target):
            raise ConfigError(
                f"resume={resume!r} is a directory but not a run directory (it has no "
                f"{HYDRA_DIR}/{CONFIG_FILE}). Run directories are the ones under {log_dir / 'runs'}."
            )
        return target.resolve(), None
    for candidate in (target.parent.parent, target.parent):
        if is_run_dir(candidate):
            return candidate.resolve(), target.resolve()
    raise ConfigError(
        f"resume={resume!r} is a file outside any run directory, so there is no run to "
        f"continue. To start a new run from the training state in it, use ckpt_path={resume}."
    )


def _resumable_with(run_dir: Path, task: Mapping[str, Any]) -> tuple[str | None, list]:
    """Why ``resume=auto`` would pass over ``run_dir`` (None: it would take it), and the
    config differences that made it pass it over."""
    try:
        differences = config_differences(migrate(stored_config(run_dir), task), task)
    except ConfigError:
        return "damaged", []
    if differences:
        return "other config", differences
    record = _record(run_dir)
    status = status_of(record) if record else Status.UNKNOWN
    if status is Status.RUNNING and _same_slurm_job(record):
        status = Status.INTERRUPTED  # this job's previous incarnation, requeued by SLURM
    if status in (Status.FINISHED, Status.RUNNING, Status.PRUNED):
        return status.value, []
    if diverged(record):
        return "diverged", []
    return None, []


def _plan_auto(resume: str, candidates: Sequence[Path], where: str, task: Mapping[str, Any],
               trusted: bool) -> ResumePlan:
    skipped: dict[str, list[str]] = {}
    closest: tuple[int, Path, list] | None = None
    resumable = []
    for run_dir in candidates:
        reason, differences = _resumable_with(run_dir, task)
        if reason is None:
            record = _record(run_dir)
            order = str(record.get("updated") or record.get("started") or "")
            resumable.append(((order, run_dir.name), run_dir))
            continue
        skipped.setdefault(reason, []).append(run_dir.name)
        if differences and (closest is None or len(differences) < closest[0]):
            closest = (len(differences), run_dir, differences)
    if resumable:
        _, run_dir = max(resumable, key=lambda item: item[0])
        choice = newest_checkpoint(run_dir, trusted=trusted)
        notes = ((logging.INFO, f"resume={resume}: continuing run {run_dir}"), *choice.notes)
        return ResumePlan(run_dir, choice.path, False, notes)
    counts = ", ".join(f"{len(names)} {kind}" for kind, names in skipped.items()) or "no runs at all"
    message = f"resume={resume}: nothing to resume in {where} ({counts})."
    if closest is not None:
        _, run_dir, differences = closest
        message += (
            f"\n  The closest run, {run_dir.name}, has another config:\n{format_differences(differences)}\n"
            f"  To continue it with its own config, pass resume={run_dir}."
        )
    if resume == AUTO_OR_NEW:
        return ResumePlan(notes=((logging.WARNING, message + " Starting a new run (resume=auto_or_new)."),))
    raise ConfigError(message + "\nTo start a new run instead, leave resume out or pass resume=auto_or_new.")


def plan_resume(
    resume: str,
    *,
    log_dir: Path,
    task: Mapping[str, Any],
    overrides: Sequence[str] | None,
    trusted: bool,
    run_dir: Path | None = None,
) -> ResumePlan:
    """Check a ``resume`` request against the files on disk and decide what the job does.

    ``task`` is the command's composed config (unresolved); ``overrides`` the command-line
    overrides (None outside Hydra, in which case ``task`` is compared as a whole). ``run_dir``
    is a run directory named explicitly (``hydra.run.dir=``): ``auto`` looks only there.
    """
    resume = str(resume)
    if resume in (AUTO, AUTO_OR_NEW):
        if run_dir is not None:
            candidates, where = ([run_dir] if is_run_dir(run_dir) else []), str(run_dir)
        else:
            candidates, where = runs_under(log_dir), str(log_dir / "runs")
        plan = _plan_auto(resume, candidates, where, task, trusted)
        if plan.run_dir is not None:
            warnings = tuple((logging.WARNING, text) for text in check_resumable(plan.run_dir))
            plan = ResumePlan(plan.run_dir, plan.checkpoint, False, (*warnings, *plan.notes))
    else:
        target_dir, checkpoint = _resolve_target(resume, log_dir)
        if run_dir is not None and run_dir.resolve() != target_dir:
            raise ConfigError(
                f"resume={resume!r} continues the run in {target_dir}, but hydra.run.dir={run_dir} "
                "names another directory. A resumed run stays in its own directory: leave "
                "hydra.run.dir out."
            )
        notes = tuple((logging.WARNING, text) for text in check_resumable(target_dir))
        stored = migrate(stored_config(target_dir), task)
        changed = non_runtime_overrides(overrides) if overrides is not None else ["(all)"]
        if changed:
            differences = config_differences(stored, task)
            if differences:
                raise ConfigError(
                    f"resume={resume!r}: this command's config differs from the run's in settings "
                    f"that change what is trained, so it cannot continue that run:\n"
                    f"{format_differences(differences)}\n"
                    "Resume with only resume=... (and runtime settings such as data.num_workers or "
                    "logger) to continue with the run's own config, or start a new run from its "
                    "state with ckpt_path=<checkpoint> and the new settings."
                )
        if checkpoint is not None:
            read_training_checkpoint(checkpoint, trusted=trusted, what=f"resume={resume!r}:")
            choice = CheckpointChoice(checkpoint, ((logging.INFO, f"resuming from {checkpoint}"),))
        else:
            choice = newest_checkpoint(target_dir, trusted=trusted)
        plan = ResumePlan(target_dir, choice.path, not changed, (*notes, *choice.notes))
    if plan.checkpoint is not None:
        effective = migrate(stored_config(plan.run_dir), task) if plan.use_stored_config else task
        checkpoint = load_checkpoint_file(plan.checkpoint, trusted=trusted, mmap=True, what="checkpoint")
        check_checkpoint_fits_model(checkpoint, effective, f"checkpoint {str(plan.checkpoint)!r}")
    return plan


def check_ckpt_path(ckpt_path: str, task: Mapping[str, Any], *, trusted: bool) -> None:
    """Every check of ``ckpt_path=<file>`` that can run before anything is built."""
    path = Path(ckpt_path).expanduser()
    checkpoint = read_training_checkpoint(path, trusted=trusted, what="ckpt_path")
    check_checkpoint_fits_model(checkpoint, task, f"ckpt_path {str(ckpt_path)!r}")


_PLANS: dict[tuple, ResumePlan] = {}


def clear_plans() -> None:
    _PLANS.clear()


def explicit_run_dir(root: DictConfig) -> Path | None:
    """The run directory the command named with ``hydra.run.dir=`` (resolved), if it did.
    ``root`` is the config with its ``hydra`` node or, inside a job, without it."""
    from hydra.core.hydra_config import HydraConfig

    hydra_node = root.get("hydra") if "hydra" in root else None
    if hydra_node is None and HydraConfig.initialized():
        hydra_node = HydraConfig.get()
    if hydra_node is None:
        return None
    overrides = OmegaConf.select(hydra_node, "overrides.hydra", default=None) or []
    if not any(str(o).lstrip("+").startswith("hydra.run.dir=") for o in overrides):
        return None
    return Path(str(OmegaConf.select(hydra_node, "run.dir"))).expanduser().resolve()


def task_overrides(root: DictConfig) -> list[str] | None:
    overrides = OmegaConf.select(root, "hydra.overrides.task", default=None)
    return list(overrides) if overrides is not None else None


def plan_for_config(root: DictConfig, overrides: Sequence[str] | None) -> ResumePlan:
    """The plan for a composed config (memoized: Hydra resolves the run directory repeatedly)."""
    resume = OmegaConf.select(root, "resume", default=None)
    ckpt_path = OmegaConf.select(root, "ckpt_path", default=None)
    trusted = bool(OmegaConf.select(root, "trust_checkpoint", default=False))
    log_dir = Path(str(OmegaConf.select(root, "paths.log_dir"))).expanduser().resolve()
    run_dir = explicit_run_dir(root) if resume else None
    key = (resume, ckpt_path, trusted, str(log_dir), str(run_dir),
           tuple(overrides) if overrides is not None else None)
    if key in _PLANS:
        return _PLANS[key]
    task = task_container(root)
    if resume and ckpt_path:
        raise ConfigError(
            f"resume={resume!r} and ckpt_path={ckpt_path!r} exclude each other: resume continues "
            "a run in its own directory with its own config; ckpt_path starts a new run from a "
            "checkpoint. Pass one of them."
        )
    if resume:
        plan = plan_resume(str(resume), log_dir=log_dir, task=task, overrides=overrides,
                           trusted=trusted, run_dir=run_dir)
    else:
        if ckpt_path:
            check_ckpt_path(str(ckpt_path), task, trusted=trusted)
        plan = ResumePlan(checkpoint=Path(ckpt_path).expanduser().resolve() if ckpt_path else None)
    _PLANS[key] = plan
    return plan
