"""Shared test helpers: compose the real configs with CPU-sized overrides, run the real CLI,
compare directory trees, and an unsafe pickle. Data writers in the real formats: ``fakes``."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig, open_dict

from resnet_lab.configs import config_dir

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


def config_options(group: str) -> list[str]:
    """The options of a config group (its YAML files, without the shared ``base`` ones)."""
    folder = config_dir() / group
    return sorted(
        str(path.relative_to(folder).with_suffix(""))
        for path in folder.rglob("*.yaml")
        if not path.name.startswith("_") and path.parent.name != "base"
    )


class SignalAt(L.Callback):
    """Test callback: sends ``signum`` to this process at the start of optimizer step
    ``step`` or, with ``hook="validation"``, during the first validation batch of epoch
    ``epoch`` (as a scheduler's signal can arrive at any moment)."""

    def __init__(self, step: int = -1, signum: str = "SIGTERM", hook: str = "batch", epoch: int = 0) -> None:
        self.step, self.hook, self.epoch = step, hook, epoch
        self.signum = getattr(signal, signum)
        self.sent = False

    def _send(self) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.hook == "batch" and trainer.global_step == self.step:
            self._send()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.hook == "validation" and not trainer.sanity_checking and trainer.current_epoch == self.epoch:
            self._send()


class KillAt(Checkpoint):
    """Test callback: SIGKILLs this process (no clean-up at all, as a lost machine) when
    ``hook`` runs in epoch ``epoch`` (for batch hooks: at optimizer step ``step``), once: the
    ``marker`` file it leaves keeps a resumed run (same config) from being killed again. It
    is a Checkpoint callback so that Lightning runs it after every other callback of that
    hook, i.e. right after the checkpoints of that moment were written."""

    def __init__(self, hook: str, marker: str, epoch: int = 0, step: int = -1) -> None:
        self.hook, self.marker, self.epoch, self.step = hook, Path(marker), epoch, step

    def _maybe_kill(self, trainer, hook: str) -> None:
        if hook != self.hook or trainer.current_epoch != self.epoch or trainer.sanity_checking:
            return
        if (self.step < 0 or trainer.global_step == self.step) and not self.marker.exists():
            self.marker.write_text("killed\n")
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe_kill(trainer, "train_batch_end")

    def on_validation_end(self, trainer, pl_module) -> None:
        self._maybe_kill(trainer, "validation_end")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._maybe_kill(trainer, "train_epoch_end")


class LogConstant(L.Callback):
    """Test callback: logs ``value`` as metric ``name`` at every validation, so a monitor on
    it ties every epoch."""

    def __init__(self, name: str, value: float) -> None:
        self.name, self.value = name, value

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log(self.name, self.value)
def resumed_trainer(*, epoch: int, batches: int, batch_size: int, resuming: bool = True, restarting: bool = True,
                    last: bool = False) -> SimpleNamespace:
    """What ``resnet_lab.data.order.resumed_position`` reads of a Lightning trainer that
    restored a checkpoint taken after ``batches`` training batches of ``epoch`` (``last``: the
    epoch's last batch; ``restarting=False``: the epoch had ended)."""
    progress = SimpleNamespace(current=SimpleNamespace(processed=batches), is_last_batch=last)
    fit_loop = SimpleNamespace(
        is_resuming=resuming,
        epoch_progress=SimpleNamespace(current=SimpleNamespace(processed=epoch)),
        epoch_loop=SimpleNamespace(restarting=restarting, batch_progress=progress),
    )
    return SimpleNamespace(training=True, fit_loop=fit_loop, train_dataloader=SimpleNamespace(batch_size=batch_size))


class FinalState(L.Callback):
    """Test callback: saves the weights (``weights``) and the last validation and training
    accuracy metrics (``metrics``) to ``path`` when training ends."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/acc"))}
        torch.save({"weights": pl_module.state_dict(), "metrics": metrics}, self.path)


class PoisonWeightsAt(L.Callback):
    """Test callback: makes the loss NaN from optimizer step ``step`` on (a weight becomes NaN)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.net.parameters()).view(-1)[0] = float("nan")


class KillDuringSave(L.Callback):
    """Test callback: SIGKILLs its own process as the ``save``-th checkpoint of optimizer step
    ``step`` is about to be written (the earlier ones of that step are on disk), once: a file
    ``marker`` says it happened, so the resumed run goes on."""

    def __init__(self, step: int, save: int, marker: str) -> None:
        self.step, self.save, self.marker = step, save, Path(marker)
        self._saves = 0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step != self.step or self.marker.exists():
            return
        self._saves += 1
        if self._saves == self.save:
            self.marker.write_text(f"killed at step {self.step}, before save {self.save}\n")
            os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint file was written at."""
    from resnet_lab.checkpoint_files import load_checkpoint_file

    return int(load_checkpoint_file(path, mmap=True)["global_step"])


# A model trained on image files: a CIFAR ResNet-20 on a folder of photo crops (two classes of
# real photographs, one of generated noise), 16 px crops, with an EMA; seconds on a CPU.
PHOTO_RUN = (
    "data=folder",
    "model=resnet20",
    "data.image_size=16",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.num_workers=0",
    "data.auto_augment=null",
    "callbacks=ema",
    "logger=none",
    "trainer.max_epochs=2",
    "+trainer.enable_progress_bar=false",
)


def train_photo_run(root: Path, *overrides: str, per_class: int = 8) -> Path:
    """Train ``PHOTO_RUN`` on a photo folder written under ``root``; return the run directory,
    with the ``.hydra/config.yaml`` Hydra would have written (older checkpoints need it)."""
    from omegaconf import OmegaConf

    from resnet_lab.train import train
    from tests.helpers.fakes import write_photo_folder

    photos = write_photo_folder(root / "photos", per_class=per_class, size=(24, 20))
    run = root / "run"
    cfg = compose_config([*PHOTO_RUN, f"data.root={photos}", *overrides], run_dir=run)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    train(cfg)
    return run
