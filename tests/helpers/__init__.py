"""Shared test helpers: compose the real configs with CPU-sized overrides, run the real CLI,
compare directory trees, and an unsafe pickle. Data writers in the real formats: ``fakes``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from resnet_lab.config import config_dir

REPO = Path(__file__).resolve().parents[2]

# Small and fast: a 3-stage CIFAR ResNet on 16x16 synthetic images, a few batches.
TINY = (
    "data=synthetic",
    "data.image_size=16",
    "data.train_size=128",
    "data.val_size=64",
    "data.test_size=64",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
)

torch.set_num_threads(min(2, torch.get_num_threads()))


def compose_config(overrides: Sequence[str] = (), *, run_dir: Path | None = None) -> DictConfig:
    """The real composed config, as `python -m resnet_lab` would build it, minus Hydra's runtime."""
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="test"):
        cfg = compose(config_name="train", overrides=list(overrides))
    if run_dir is not None:
        with open_dict(cfg):
            cfg.paths.root_dir = str(run_dir.parent)
            cfg.paths.data_dir = str(run_dir.parent / "data")
            cfg.paths.log_dir = str(run_dir.parent / "outputs")
            cfg.paths.output_dir = str(run_dir)
    return cfg


def run_cli(
    args: Sequence[str], cwd: Path, *, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m resnet_lab ARGS` in `cwd` (so outputs/ lands there)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "resnet_lab", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "outputs" / "runs").glob("*") if p.is_dir())




def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash (and every directory)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        digest[relative] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return digest


class Evil:
    """Unpickling this calls os.system: the attack weights_only loading exists to stop."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def resumed_trainer(*, epoch: int, batches: int, batch_size: int) -> SimpleNamespace:
    """What ``resnet_lab.data.order.resumed_position`` reads of a Lightning trainer that
    restored a checkpoint taken after ``batches`` training batches of ``epoch``."""
    progress = SimpleNamespace(current=SimpleNamespace(processed=batches), is_last_batch=False)
    fit_loop = SimpleNamespace(
        is_resuming=True,
        epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=epoch)),
        epoch_loop=SimpleNamespace(restarting=True, batch_progress=progress),
    )
    return SimpleNamespace(training=True, fit_loop=fit_loop, train_dataloader=SimpleNamespace(batch_size=batch_size))
