"""Multi-process runs under Hydra: how DDP children are started, and what one job leaves behind.

Lightning's DDP launcher starts the processes of ranks 1..N-1 by re-running the command line
(``_SubprocessScriptLauncher``). Under Hydra it appends ``hydra.run.dir=<run dir>`` to
``sys.argv`` (``_hydra_subprocess_cmd``, Lightning 2.6), which is right for a single run and
wrong for a multirun: the children get ``-m`` and the comma sweeps back, run the whole sweep
themselves, and write to a run directory that is not the job's (Lightning #11300,
lightning-hydra-template #393, Hydra #2070). ``child_command`` starts every child as a *single
run of this job*: this job's own overrides (``HydraConfig.overrides.task``, sweep choices
included) and this job's output directory, in Hydra's run mode.

A multirun executes its jobs one after another in the same process, and Lightning leaves
the process group and the launcher's environment (``LOCAL_RANK``, ``MASTER_PORT``, ...) in
place after a job. The next job would then take ``LOCAL_RANK`` as a sign that its processes
were started externally, start no children and wait for them forever. ``job_scope`` undoes
both after each job.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

# Set in the launching process by Lightning's subprocess launcher (see the module docstring).
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Environment variables that carry a process's rank, from Lightning's launcher, torchrun,
# SLURM or jsrun.
RANK_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")

# Hydra overrides that describe the sweep or name the run directory: the children run one
# job in run mode, in the directory given to them, so these are replaced, not forwarded.
_SWEEP_OVERRIDE_PREFIXES = (
    "hydra.mode", "hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher",
    "hydra/launcher", "hydra.run", "hydra.job.name", "hydra.job.num", "hydra.job.id",
    "hydra.output_subdir",
)


def is_global_zero_from_env() -> bool:
    """Whether this process is rank zero, as far as the launch environment tells.

    Known before Lightning sets up the process group, so usable for logging set-up.
    """
    for key in RANK_ENV:
        value = os.environ.get(key, "").strip()
        if value and value != "0":
            return False
    return True


def _quoted(value: str) -> str:
    """``value`` as a quoted string in Hydra's override grammar (paths may hold spaces or '=')."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_sweep_override(override: str) -> bool:
    key = override.lstrip("~+").split("=", 1)[0]
    return any(key == prefix or key.startswith(prefix + ".") for prefix in _SWEEP_OVERRIDE_PREFIXES)


def child_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command and working directory that start DDP rank ``local_rank`` of this Hydra job.

    Replaces ``_hydra_subprocess_cmd`` of Lightning's subprocess launcher (same signature).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    # Always resnet_lab's entry point, not sys.argv[0] or __main__ as in Lightning: under
    # hydra/launcher=local_parallel the job runs in a joblib worker, whose __main__ is joblib's.
    command = [sys.executable, "-m", "resnet_lab"]
    if hydra_cfg.job.config_name:
        command += ["--config-name", hydra_cfg.job.config_name]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line":  # --config-dir
            command += ["--config-dir", source.path]
    command += list(hydra_cfg.overrides.task)
    command += [o for o in hydra_cfg.overrides.hydra if not _is_sweep_override(o)]
    command += [
        "hydra.mode=RUN",
        f"hydra.run.dir={_quoted(str(hydra_cfg.runtime.output_dir))}",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
        # The launching process has written .hydra/ already; a child must not rewrite it.
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def use_job_command_for_ddp_children() -> None:
    """Make Lightning's DDP launcher start children with ``child_command``.

    ``_hydra_subprocess_cmd`` is private to Lightning, so this checks that it is still
    there and still called the way this module expects, and says so when it is not.
    """
    import inspect

    from lightning.pytorch.strategies.launchers import subprocess_script

    current = getattr(subprocess_script, "_hydra_subprocess_cmd", None)
    if current is child_command:
        return
    if current is None or list(inspect.signature(current).parameters) != ["local_rank"]:
        raise RuntimeError(
            "lightning.pytorch.strategies.launchers.subprocess_script._hydra_subprocess_cmd(local_rank) "
            "is gone or changed: this Lightning version starts DDP children differently; update "
            "resnet_lab.distributed for it."
        )
    subprocess_script._hydra_subprocess_cmd = child_command


def _quiet_non_zero_rank() -> None:
    """On ranks other than zero: no train.log of their own, and warnings and errors only.

    Lightning's own loggers have their own level and handler, so they are set too (its
    "[rank: 1] Seed set to ..." and "Initializing distributed: GLOBAL_RANK: 1" lines).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    for name in ("", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def job_scope() -> Iterator[None]:
    """One Hydra job's distributed set-up and teardown (see the module docstring)."""
    use_job_command_for_ddp_children()
    if not is_global_zero_from_env():
        _quiet_non_zero_rank()
    saved = {key: os.environ.get(key) for key in LAUNCHER_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
