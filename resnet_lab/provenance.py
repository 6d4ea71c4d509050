"""Where a run came from: the code's git commit, the versions of the packages that shaped the
numbers, and the device it ran on. Every logger records this next to the resolved config,
so a result can be traced back to what produced it.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent

# Distributions whose version can change a training result or its speed.
PACKAGES = (
    "resnet-lab",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "numpy",
    "timm",
    "optuna",
    "wandb",
    "tensorboard",
)


def _git(*args: str, cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_state(path: Path = _PACKAGE_DIR) -> dict[str, Any]:
    """The commit of the checkout holding ``path``, and whether tracked files differ from it.

    Empty when resnet_lab runs from an installed wheel (no checkout): the package version
    identifies the code then.
    """
    commit = _git("rev-parse", "HEAD", cwd=path)
    if commit is None:
        return {}
    # Untracked files (runs, data) do not change the code, so they do not make it dirty.
    changes = _git("status", "--porcelain", "--untracked-files=no", cwd=path)
    return {"commit": commit, "dirty": bool(changes)}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_info(trainer: Any = None) -> dict[str, Any]:
    """The hardware the run uses: accelerator and device count as the trainer sees them, the
    GPU names and the CUDA/cuDNN versions when CUDA is in use, the CPU otherwise."""
    import torch

    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if trainer is not None:
        info["accelerator"] = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
        info["devices"] = trainer.num_devices
        info["num_nodes"] = trainer.num_nodes
        info["precision"] = str(trainer.precision)
    uses_cuda = info.get("accelerator", "cuda") == "cuda"
    if uses_cuda and torch.cuda.is_available():
        indices = getattr(trainer, "device_ids", None) or range(torch.cuda.device_count())
        info["gpus"] = [torch.cuda.get_device_name(i) for i in indices]
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _command_line() -> str:
    """The command as typed: ``python -m resnet_lab ...`` rather than the path of __main__.py."""
    if not sys.argv:
        return ""
    program = Path(sys.argv[0])
    if program.name == "__main__.py":
        head = f"python -m {program.parent.name}"
    else:
        head = program.name
    return " ".join([head, *sys.argv[1:]])


def provenance(trainer: Any = None) -> dict[str, Any]:
    """Everything above in one dict, plus the command line that started the run."""
    return {
        "git": git_state(),
        "packages": package_versions(),
        "device": device_info(trainer),
        "command": _command_line(),
    }
