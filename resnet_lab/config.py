"""Where the configs live, the OmegaConf resolvers they use, and the checks run before any work.

``conf/`` sits at the repository root in a source checkout and inside the package in a
wheel (pyproject's force-include); ``config_dir()`` finds whichever is there.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from pathlib import Path
from typing import get_args

from omegaconf import DictConfig, ListConfig, OmegaConf

from resnet_lab.errors import ConfigError
from resnet_lab.hardware import check_hardware
from resnet_lab.sweeps.naming import sweep_key

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(
        f"resnet_lab's configs were not found in {_PACKAGE_DIR / 'conf'} or "
        f"{_PACKAGE_DIR.parent / 'conf'}; reinstall the package."
    )


_RUN_IDS: dict[str, str] = {}


def run_id(kind: str = "run") -> str:
    """A run directory name, fixed for the life of the process: time first, so names sort.

    A random suffix keeps two runs started in the same second apart (a bare timestamp
    collides; lightning-hydra-template #511). Hydra resolves the run directory more than
    once per process, so the value is memoized per ``kind`` (runs and multiruns).
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


def writable_dir(path: str) -> str:
    """Check that ``path`` exists as a writable directory or can be created; return it.

    Hydra resolves this while choosing the run directory, before any job code runs, and
    prints any exception raised there with a stack trace. So a bad path is reported here
    and the process exits with status 2 (SystemExit passes through Hydra untouched).
    """
    try:
        return _check_writable(path)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_writable(path: str) -> str:
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


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("launch_dir", launch_dir, replace=True)
    OmegaConf.register_new_resolver("run_id", run_id, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("writable_dir", writable_dir, replace=True)
    OmegaConf.register_new_resolver("sweep_key", sweep_key, replace=True)  # Optuna sweep dirs
    # hydra.run.dir / hydra.output_subdir of a resumed run (resnet_lab.resume).
    OmegaConf.register_new_resolver("resume_run_dir", _resume_run_dir, replace=True)
    OmegaConf.register_new_resolver("resume_output_subdir", _resume_output_subdir, replace=True)
    OmegaConf.register_new_resolver("evaluation_dir", _evaluation_dir, replace=True)  # resnet_lab.evaluate
    # data=folder's num_classes, counted from the class folders or CSV index (conf/data/folder.yaml).
    OmegaConf.register_new_resolver("folder_classes", _folder_classes, replace=True, use_cache=True)


def _resume_run_dir(fresh_dir: str, *, _root_: DictConfig) -> str:
    from resnet_lab.resume import resume_run_dir

    return resume_run_dir(fresh_dir, _root_=_root_)


def _resume_output_subdir(*, _root_: DictConfig) -> str:
    from resnet_lab.resume import resume_output_subdir

    return resume_output_subdir(_root_=_root_)


def _evaluation_dir(fallback: str, *, _root_: DictConfig) -> str:
    from resnet_lab.evaluate import evaluation_dir

    return evaluation_dir(fallback, _root_=_root_)


def _folder_classes(root: str | None, index: str | None) -> int | None:
    from resnet_lab.data.folder_sources import count_classes

    return count_classes(root, index)


register_resolvers()


def _positive(cfg: DictConfig, key: str, *, integer: bool, allow_none: bool = False) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None and allow_none:
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (integer and not isinstance(value, int)) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{key} must be {kind}, got {value!r}. Example: {key}={1 if integer else 0.1}.")


def _device_count(devices) -> int | None:
    """The number of devices a Lightning ``devices`` value asks for, if known from config."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices)
    if isinstance(devices, str):
        if devices.strip().isdigit():
            return int(devices)
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
    return None  # "auto" or -1: known only once the hardware is seen


def precisions() -> tuple[str, ...]:
    """Lightning's precision names (its own list, so new ones are accepted as they come)."""
    from lightning.fabric.connector import _PRECISION_INPUT_STR

    return tuple(str(p) for p in get_args(_PRECISION_INPUT_STR))


def _precision_aliases() -> tuple[str, ...]:
    from lightning.fabric.connector import _PRECISION_INPUT_STR_ALIAS

    return tuple(str(p) for p in get_args(_PRECISION_INPUT_STR_ALIAS))


def check_config(cfg: DictConfig) -> None:
    """Reject values that cannot work, before anything is built or written.

    Each error names the key, what is allowed and an example fix.
    """
    check_hardware(cfg)  # GPU asked for but absent, multinode sizes unset
    monitor = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor", default=None)
    if isinstance(monitor, str) and monitor.startswith("test/"):
        raise ConfigError(
            f"the best checkpoint cannot be chosen on {monitor!r}: test metrics exist only after "
            "training. Use a validation metric (optimized_metric=val/acc_top1) or callbacks=none."
        )
    _positive(cfg, "data.batch_size", integer=True)
    _positive(cfg, "optimizer.lr", integer=False)
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    if not (max_steps is not None and max_steps > 0 and max_epochs in (None, -1)):
        _positive(cfg, "trainer.max_epochs", integer=True)
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    allowed = precisions()
    if precision not in allowed + _precision_aliases():
        raise ConfigError(
            f"trainer.precision={precision!r} is not a precision Lightning knows. Allowed: "
            f"{', '.join(allowed)}."
        )
    devices = _device_count(OmegaConf.select(cfg, "trainer.devices", default=1))
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1) or 1
    batch = cfg.data.batch_size
    if devices is not None and batch % (devices * nodes):
        world = devices * nodes
        raise ConfigError(
            f"data.batch_size={batch} is the global batch and must divide evenly over "
            f"{world} devices (trainer.devices={devices} x trainer.num_nodes={nodes}); use a "
            f"multiple of {world}, e.g. data.batch_size={max(world, batch // world * world)}."
        )
