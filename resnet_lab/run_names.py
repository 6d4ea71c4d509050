"""How a new run directory is named and placed: the resolvers of ``conf/hydra`` and ``conf/paths``.

``run_id`` names runs by start time plus a random suffix; ``launch_dir`` is where the command
was started; ``writable_dir`` refuses, before Hydra creates anything, a log directory that
cannot be written. Entry points register the ones their configs use (``RESOLVERS``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

from resnet_lab.errors import ConfigError, exit_on_user_error

_RUN_IDS: dict[str, str] = {}


def run_id(kind: str = "run") -> str:
    """A run directory name, fixed for the life of the process: time first, so names sort.

    A random suffix keeps two runs started in the same second apart (a bare timestamp
    collides; lightning-hydra-template #511). Hydra resolves the run directory more than
    once per process, so the value is memoized per ``kind`` (runs, multiruns, evaluations).
    """
    if kind not in _RUN_IDS:
        _RUN_IDS[kind] = _torchrun_run_id() or time.strftime("%Y-%m-%d_%H-%M-%S") + "_" + secrets.token_hex(3)
    return _RUN_IDS[kind]


def _torchrun_run_id() -> str | None:
    """Under torchrun on one machine, a run id that every worker computes alike, so that
    they share one run directory: the start time of torchrun's agent (the workers' parent
    process) and a hash of its pid, start and torchrun's restart count (a restarted group
    starts a new directory rather than write over the old one's checkpoints).

    None elsewhere, and under torchrun across machines, where the workers have no parent
    in common: there every machine needs the same ``hydra.run.dir`` (docs/HARDWARE.md).
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    world, local = os.environ.get("WORLD_SIZE"), os.environ.get("LOCAL_WORLD_SIZE")
    if not world or world != local:
        return None
    agent = os.getppid()
    try:
        # /proc/<pid>/stat: field 22 is the start time in clock ticks after boot; the
        # command name (field 2) may hold spaces, so count from its closing parenthesis.
        start_ticks = int(Path(f"/proc/{agent}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    started = time.localtime(boot + start_ticks / os.sysconf("SC_CLK_TCK"))
    key = f"{agent}-{start_ticks}-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return time.strftime("%Y-%m-%d_%H-%M-%S", started) + "_" + hashlib.sha1(key.encode()).hexdigest()[:6]


def check_writable(path: str) -> str:
    """``path`` if it exists as a writable directory or can be created; else a ConfigError."""
    target = Path(path).expanduser()
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write run outputs under {str(target)!r}: {str(probe)!r} is "
            f"{'not a directory' if probe.exists() and not probe.is_dir() else 'not writable'}. "
            "Set paths.log_dir to a directory you can write, e.g. paths.log_dir=$HOME/resnet_lab_runs."
        )
    return str(target)


def writable_dir(path: str) -> str:
    """Resolver: ``check_writable``. Hydra resolves it while choosing the run directory,
    before any job code runs, and would print any exception with a stack trace."""
    with exit_on_user_error():
        return check_writable(path)


def launch_dir() -> str:
    """The directory the command was started in (``paths.root_dir``).

    Hydra's ``${hydra:runtime.cwd}`` only resolves inside a job: the process that launches
    a multirun resolves ``hydra.sweep.dir`` before any job, with no HydraConfig set, and
    fails there. Hydra never changes that process's directory, so it is the current one.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.cwd)
    return os.getcwd()


# (name, function, use_cache) for OmegaConf.register_new_resolver.
RESOLVERS = (
    ("launch_dir", launch_dir, False),
    ("run_id", run_id, True),
    ("writable_dir", writable_dir, False),
)
