"""Which run to continue, from which checkpoint, with which config.

``resume`` (in ``conf/train.yaml``) takes:

- ``<run dir>``: continue that run, in that directory, from its newest readable checkpoint;
- ``<checkpoint>`` inside a run directory: continue that run from that checkpoint;
- ``auto``: continue the latest unfinished run under ``paths.log_dir`` whose config is this
  command's (so re-running a command with ``resume=auto`` appended picks up where it
  stopped, which is what a requeued SLURM job does); an error if there is none;
- ``auto_or_new``: the same, but start a new run when there is nothing to resume.

``ckpt_path=<file>`` is different: a *new* run (new directory, any config) that starts from
the training state in the file, Lightning's ``fit(ckpt_path=...)``. The two exclude each other.

All of it is decided before Hydra creates or touches a run directory: Hydra resolves
``hydra.run.dir`` first, and its resolver (``resume_run_dir``, registered in
``resnet_lab.config``) calls ``plan_for_config`` here, which checks every input and exits
with a message on bad input, so a bad command changes nothing in any run directory. The
resumed run's own ``.hydra/`` stays as it was: the resuming command's Hydra files go to
``.hydra/resumes/<id>/`` (``resume_output_subdir``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resnet_lab.checkpointing import (
    check_state_dict_fits,
    load_checkpoint_file,
    remove_stale_temporaries,
    require_training_state,
)
from resnet_lab.errors import CheckpointError, ConfigError, UserError

log = logging.getLogger("resnet_lab")

AUTO = "auto"
AUTO_OR_NEW = "auto_or_new"
HYDRA_DIR = ".hydra"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
RESUMES_SUBDIR = f"{HYDRA_DIR}/resumes"

# Settings that may differ between a run and the command that resumes it: where files are,
# how the run is watched and reported, and the resume options themselves. None of them
# changes what is computed. Everything else must match, or the resumed run would no longer
# be the run it continues. Patterns are fnmatch patterns over dotted keys.
RUNTIME_KEYS = (
    "resume",
    "ckpt_path",
    "trust_checkpoint",
    "test",
    "paths",
    "paths.*",
    "logger",
    "logger.*",
    "data.num_workers",
    "data.pin_memory",
    "data.root",
    "data.system_dirs",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.profiler",
    "trainer.profiler.*",
    "callbacks.epoch_summary",
    "callbacks.epoch_summary.*",
    "callbacks.last_checkpoint.every_n_train_steps",
)
# How many differing keys a message lists.
MAX_LISTED = 15


def is_runtime_key(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RUNTIME_KEYS)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree} if prefix else {}


def task_container(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The job's config as plain containers, interpolations unresolved, without ``hydra``."""
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    container.pop("hydra", None)
    return container


def config_differences(old: Mapping, new: Mapping) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every non-runtime key that differs.

    Values are compared as written (interpolations unresolved), so a path that resolves
    differently from another directory is not a difference, and ``${data.num_classes}`` is
    compared through the key it points to.
    """
    flat_old, flat_new = _flatten(old), _flatten(new)
    missing = object()
    differences = []
    for key in sorted(set(flat_old) | set(flat_new)):
        if is_runtime_key(key):
            continue
        before, after = flat_old.get(key, missing), flat_new.get(key, missing)
        if before != after:
            differences.append((key, "(absent)" if before is missing else before,
                                "(absent)" if after is missing else after))
    return differences


def format_differences(differences: Sequence[tuple[str, Any, Any]]) -> str:
    lines = [f"    {key}: {old!r} -> {new!r}" for key, old, new in differences[:MAX_LISTED]]
    if len(differences) > MAX_LISTED:
        lines.append(f"    ... and {len(differences) - MAX_LISTED} more")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- runs


def is_run_dir(path: Path) -> bool:
    return (path / HYDRA_DIR / CONFIG_FILE).is_file()


def stored_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / HYDRA_DIR / CONFIG_FILE
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as error:  # noqa: BLE001 - unreadable YAML is a user-facing problem
        raise ConfigError(f"cannot read the config of run {str(run_dir)!r} ({path}): {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} does not hold a config mapping.")
    return loaded


def _run_state(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """The run's status as the runs viewer sees it, and its record."""
    from resnet_lab.runs.run import Run

    run = Run(run_dir)
    return run.status, run.record


def _diverged(record: Mapping[str, Any]) -> bool:
    return str(record.get("exception", "")).startswith("TrainingDivergedError")


def _same_slurm_job(record: Mapping[str, Any]) -> bool:
    """Whether the record was written by an earlier run of this very SLURM job (requeued)."""
    job = os.environ.get("SLURM_JOB_ID")
    return bool(job) and str(record.get("slurm_job_id", "")) == job


def _alive_here(record: Mapping[str, Any]) -> bool | None:
    """True/False when the run's process is on this host; None when it cannot be told."""
    from resnet_lab.runs.run import process_alive

    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    return process_alive(pid, str(record.get("command", ""))) is not False


def check_resumable(run_dir: Path) -> list[str]:
    """Refuse a run that finished or whose process still runs; return warnings for the log.

    A record that says "running" but whose process is gone (SIGKILL, a lost machine) is
    resumable; one whose process lives on another machine cannot be checked, and is resumed
    (this function is only reached for an explicitly named run) with a warning.
    """
    status, record = _run_state(run_dir)
    if status == "finished":
        raise ConfigError(
            f"run {str(run_dir)!r} finished ({record.get('ended', 'time unknown')}); there is "
            "nothing to resume. To train on from its weights and optimizer state with a new "
            "config (e.g. more epochs), start a new run with "
            f"ckpt_path={run_dir / CHECKPOINT_DIR / 'last.ckpt'}."
        )
    if status == "pruned":
        raise ConfigError(f"run {str(run_dir)!r} was pruned by its sweep; there is nothing to resume.")
    warnings = []
    if record.get("status") in ("running", "trained") and not _same_slurm_job(record):
        alive = _alive_here(record)
        if alive:
            raise ConfigError(
                f"run {str(run_dir)!r} is still running (pid {record.get('pid')} on this machine). "
                "Resuming it now would have two processes write one run directory. Stop it first "
                f"(kill {record.get('pid')}: on SIGTERM it saves a checkpoint and exits) or wait."
            )
        if alive is None and status == "running":
            warnings.append(
                f"run {run_dir} says it is running on {record.get('host')} (pid "
                f"{record.get('pid')}, last update {record.get('updated', '?')}), which cannot be "
                "checked from here; resuming it as asked. Make sure that process is gone."
            )
    if _diverged(record):
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


# ----------------------------------------------------------------------------- checkpoints


Note = tuple[int, str]  # (logging level, message)


@dataclass(frozen=True)
class CheckpointChoice:
    path: Path | None
    notes: tuple[Note, ...] = ()


def _checkpoint_candidates(run_dir: Path) -> list[Path]:
    candidates = sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt"))
    # Lightning's own SLURM handler saves hpc_ckpt_<n>.ckpt in the run directory.
    candidates += sorted(run_dir.glob("hpc_ckpt_*.ckpt"))
    return [path for path in candidates if path.is_file()]


def read_training_checkpoint(path: Path, *, trusted: bool, what: str) -> dict[str, Any]:
    """Load (tensors memory-mapped) and check that ``path`` can continue a run."""
    checkpoint = load_checkpoint_file(path, trusted=trusted, mmap=True, what=what)
    require_training_state(checkpoint, f"{what} {str(path)!r}")
    return checkpoint


def newest_checkpoint(run_dir: Path, *, trusted: bool) -> CheckpointChoice:
    """The readable training checkpoint of ``run_dir`` with the most optimizer steps.

    Ties (``best.ckpt`` and ``last.ckpt`` written at the same step) go to ``last.ckpt``,
    then to the newer file. Unreadable files are passed over, with a note saying so; if
    every checkpoint is unreadable that is an error, never a silent restart.
    """
    found, problems = [], []
    for path in _checkpoint_candidates(run_dir):
        try:
            checkpoint = read_training_checkpoint(path, trusted=trusted, what="checkpoint")
        except CheckpointError as error:
            problems.append((path, str(error)))
            continue
        step = int(checkpoint.get("global_step", -1))
        del checkpoint
        found.append(((step, path.name == "last.ckpt", path.stat().st_mtime), path))
    if not found:
        if problems:
            listing = "\n".join(f"  {path.name}: {message}" for path, message in problems)
            raise CheckpointError(
                f"run {str(run_dir)!r} has checkpoints but none can be read:\n{listing}\n"
                "Nothing was changed. Restore a good copy into "
                f"{run_dir / CHECKPOINT_DIR}, or start a new run."
            )
        return CheckpointChoice(None, ((logging.WARNING, (
            f"run {run_dir} has no checkpoint yet: it starts over from step 0 in the same directory")),))
    (step, _, _), path = max(found, key=lambda item: item[0])
    notes: list[Note] = [(logging.WARNING, f"passed over {broken.name}: {message}") for broken, message in problems]
    if problems:
        notes.append((logging.WARNING, f"resuming from {path} (step {step}), the newest checkpoint that can be read"))
    else:
        notes.append((logging.INFO, f"resuming from {path} (step {step})"))
    return CheckpointChoice(path, tuple(notes))


def check_checkpoint_fits_model(checkpoint: Mapping[str, Any], task: Mapping[str, Any], what: str) -> None:
    """Compare the checkpoint's network (``net.*``) with the configured model, names and shapes.

    The model is built on PyTorch's ``meta`` device: no memory, no initialization cost.
    """
    import torch
    from hydra.utils import instantiate

    cfg = OmegaConf.create(dict(task))
    model_cfg = cfg.get("model")
    if model_cfg is None or "_target_" not in model_cfg:
        return
    overrides = {"weights": None} if "weights" in model_cfg else {}
    try:
        with torch.device("meta"):
            net = instantiate(model_cfg, **overrides)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - the job itself will report a broken model config
        log.debug("could not build the model to check %s: %s", what, error)
        return
    state = checkpoint.get("state_dict", {})
    found = {key[len("net."):]: value for key, value in state.items() if key.startswith("net.")}
    check_state_dict_fits(
        net.state_dict(), found, what,
        hint="Use the model= and model options the checkpoint was trained with.",
    )


# ----------------------------------------------------------------------------- plans


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


def _override_keys(overrides: Iterable[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [override.key_or_group for override in parsed]


def _non_runtime_overrides(overrides: Iterable[str]) -> list[str]:
    return [key for key in _override_keys(overrides) if not key.startswith("hydra") and not is_runtime_key(key)]


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


def _plan_auto(resume: str, log_dir: Path, task: Mapping[str, Any], trusted: bool) -> ResumePlan:
    skipped: dict[str, list[str]] = {"finished": [], "running": [], "other config": [], "diverged": [], "pruned": []}
    closest: tuple[int, Path, list] | None = None
    candidates = []
    for run_dir in runs_under(log_dir):
        try:
            differences = config_differences(stored_config(run_dir), task)
        except ConfigError:
            continue
        if differences:
            skipped["other config"].append(run_dir.name)
            if closest is None or len(differences) < closest[0]:
                closest = (len(differences), run_dir, differences)
            continue
        status, record = _run_state(run_dir)
        if status == "running" and _same_slurm_job(record):
            status = "interrupted"  # this job's previous incarnation, requeued by SLURM
        if status in ("finished", "running", "pruned"):
            skipped[status].append(run_dir.name)
            continue
        if _diverged(record):
            skipped["diverged"].append(run_dir.name)
            continue
        order = str(record.get("updated") or record.get("started") or "")
        candidates.append(((order, run_dir.name), run_dir))
    if candidates:
        _, run_dir = max(candidates, key=lambda item: item[0])
        choice = newest_checkpoint(run_dir, trusted=trusted)
        return ResumePlan(run_dir, choice.path, False, ((logging.INFO, f"resume={resume}: continuing run {run_dir}"), *choice.notes))
    counts = ", ".join(f"{len(names)} {kind}" for kind, names in skipped.items() if names) or "no runs at all"
    message = f"resume={resume}: nothing to resume under {log_dir / 'runs'} ({counts})."
    if closest is not None:
        _, run_dir, differences = closest
        message += (
            f"\n  The closest run, {run_dir.name}, has another config:\n{format_differences(differences)}\n"
            f"  To continue it with its own config, pass resume={run_dir}."
        )
    if resume == AUTO_OR_NEW:
        return ResumePlan(notes=((logging.WARNING, message + " Starting a new run (resume=auto_or_new)."),))
    raise ConfigError(
        message + "\nTo start a new run instead, leave resume out or pass resume=auto_or_new."
    )


def plan_resume(
    resume: str,
    *,
    log_dir: Path,
    task: Mapping[str, Any],
    overrides: Sequence[str] | None,
    trusted: bool,
) -> ResumePlan:
    """Check a ``resume`` request against the files on disk and decide what the job does.

    ``task`` is the command's composed config (unresolved); ``overrides`` the command-line
    overrides (None outside Hydra, in which case ``task`` is compared as a whole).
    """
    resume = str(resume)
    if resume in (AUTO, AUTO_OR_NEW):
        plan = _plan_auto(resume, log_dir, task, trusted)
        if plan.run_dir is not None:
            warnings = tuple((logging.WARNING, text) for text in check_resumable(plan.run_dir))
            plan = ResumePlan(plan.run_dir, plan.checkpoint, False, (*warnings, *plan.notes))
    else:
        run_dir, checkpoint = _resolve_target(resume, log_dir)
        notes = tuple((logging.WARNING, text) for text in check_resumable(run_dir))
        stored = stored_config(run_dir)
        changed = _non_runtime_overrides(overrides) if overrides is not None else ["(all)"]
        use_stored = not changed
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
            choice = newest_checkpoint(run_dir, trusted=trusted)
        plan = ResumePlan(run_dir, choice.path, use_stored, (*notes, *choice.notes))
    if plan.checkpoint is not None:
        effective = stored_config(plan.run_dir) if plan.use_stored_config else task
        checkpoint = load_checkpoint_file(plan.checkpoint, trusted=trusted, mmap=True, what="checkpoint")
        check_checkpoint_fits_model(checkpoint, effective, f"checkpoint {str(plan.checkpoint)!r}")
    return plan


def check_ckpt_path(ckpt_path: str, task: Mapping[str, Any], *, trusted: bool) -> None:
    """Every check of ``ckpt_path=<file>`` that can run before anything is built."""
    path = Path(ckpt_path).expanduser()
    checkpoint = read_training_checkpoint(path, trusted=trusted, what="ckpt_path")
    check_checkpoint_fits_model(checkpoint, task, f"ckpt_path {str(ckpt_path)!r}")


# ----------------------------------------------------------------------------- Hydra


_PLANS: dict[tuple, ResumePlan] = {}


def _select(root: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(root, key, default=default)


def plan_for_config(root: DictConfig, overrides: Sequence[str] | None) -> ResumePlan:
    """The plan for a composed config (memoized: Hydra resolves the run directory repeatedly)."""
    resume = _select(root, "resume")
    ckpt_path = _select(root, "ckpt_path")
    trusted = bool(_select(root, "trust_checkpoint", False))
    log_dir = Path(str(_select(root, "paths.log_dir"))).expanduser().resolve()
    key = (resume, ckpt_path, trusted, str(log_dir), tuple(overrides) if overrides is not None else None)
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
        plan = plan_resume(str(resume), log_dir=log_dir, task=task, overrides=overrides, trusted=trusted)
    else:
        if ckpt_path:
            check_ckpt_path(str(ckpt_path), task, trusted=trusted)
        plan = ResumePlan(checkpoint=Path(ckpt_path).expanduser().resolve() if ckpt_path else None)
    _PLANS[key] = plan
    return plan


def _hydra_overrides(root: DictConfig) -> list[str] | None:
    overrides = _select(root, "hydra.overrides.task")
    return list(overrides) if overrides is not None else None


def resume_run_dir(fresh_dir: str, *, _root_: DictConfig) -> str:
    """Hydra resolver for ``hydra.run.dir``: the resumed run's directory, else ``fresh_dir``.

    Runs before Hydra creates anything; bad input is reported here and the process exits
    with status 2, so no run directory is created or changed.
    """
    try:
        plan = plan_for_config(_root_, _hydra_overrides(_root_))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return str(plan.run_dir) if plan.run_dir is not None else fresh_dir


def resume_output_subdir(*, _root_: DictConfig) -> str:
    """Hydra resolver for ``hydra.output_subdir``: ``.hydra``, or for a resumed run a
    subdirectory of its own, so the run's original ``.hydra/`` files are never rewritten."""
    from hydra.types import RunMode

    from resnet_lab.config import run_id

    if _select(_root_, "hydra.mode") == RunMode.MULTIRUN:
        return HYDRA_DIR  # resume and --multirun are refused in prepare_job
    try:
        plan = plan_for_config(_root_, _hydra_overrides(_root_))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return HYDRA_DIR if plan.run_dir is None else f"{RESUMES_SUBDIR}/{run_id('run')}"


# ----------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class JobStart:
    cfg: DictConfig
    ckpt_path: str | None
    notes: tuple[Note, ...] = ()


def _apply_runtime_overrides(stored: DictConfig, current: DictConfig, overrides: Sequence[str]) -> None:
    for key in _override_keys(overrides):
        if key.startswith("hydra") or not is_runtime_key(key):
            continue
        value = OmegaConf.select(current, key, default=None, throw_on_missing=False)
        if value is None and OmegaConf.select(stored, key, default=None) is None:
            continue
        OmegaConf.update(stored, key, value, merge=False, force_add=True)


def prepare_job(cfg: DictConfig) -> JobStart:
    """The config a training job runs with and the checkpoint ``fit`` restores.

    Under Hydra the plan was made (and checked) while Hydra chose the run directory; here it
    is looked up again. A DDP child started by Lightning only needs the checkpoint: the
    run's status now shows rank 0 running.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from resnet_lab.distributed import is_global_zero_from_env

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
        choice = CheckpointChoice(None)
        if str(resume) not in (AUTO, AUTO_OR_NEW) and Path(str(resume)).is_file():
            choice = CheckpointChoice(Path(str(resume)).resolve())
        elif is_run_dir(output_dir):
            choice = newest_checkpoint(output_dir, trusted=trusted)
        use_stored = str(resume) not in (AUTO, AUTO_OR_NEW) and not _non_runtime_overrides(overrides or [])
        plan = ResumePlan(output_dir if is_run_dir(output_dir) else None, choice.path, use_stored)
    else:
        plan = plan_for_config(cfg, overrides)
    if plan.run_dir is None:
        ckpt = str(plan.checkpoint) if plan.checkpoint is not None else None
        return JobStart(cfg, ckpt, plan.notes)
    if plan.use_stored_config and overrides is not None:
        job_cfg = OmegaConf.create(stored_config(plan.run_dir))
        _apply_runtime_overrides(job_cfg, cfg, overrides)
    else:
        job_cfg = cfg.copy()
    with _writable(job_cfg):
        job_cfg.resume = str(resume)
        job_cfg.ckpt_path = None
        if Path(str(job_cfg.paths.output_dir)).resolve() != plan.run_dir:
            job_cfg.paths.output_dir = str(plan.run_dir)  # train(cfg) called outside Hydra
    removed = remove_stale_temporaries(plan.run_dir / CHECKPOINT_DIR)
    notes = (*plan.notes, *((logging.INFO, f"removed {path.name}, left by a save that was killed") for path in removed))
    return JobStart(job_cfg, str(plan.checkpoint) if plan.checkpoint else None, notes)


class _writable:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.struct = OmegaConf.is_struct(cfg)

    def __enter__(self) -> DictConfig:
        OmegaConf.set_struct(self.cfg, False)
        OmegaConf.set_readonly(self.cfg, False)
        return self.cfg

    def __exit__(self, *exc) -> None:
        OmegaConf.set_struct(self.cfg, self.struct)


def log_notes(notes: Iterable[Note]) -> None:
    for level, message in notes:
        log.log(level, "%s", message)


__all__ = [
    "AUTO",
    "AUTO_OR_NEW",
    "RUNTIME_KEYS",
    "JobStart",
    "ResumePlan",
    "config_differences",
    "newest_checkpoint",
    "plan_for_config",
    "plan_resume",
    "prepare_job",
    "resume_output_subdir",
    "resume_run_dir",
]
