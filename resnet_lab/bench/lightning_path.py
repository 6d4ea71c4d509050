"""Our training path as ``python -m resnet_lab`` builds it: ``ImageClassifier`` + ``lightning.Trainer``.

Built directly, not through Hydra (the benchmark runs where Hydra is not installed), from the
same factories, the trainer defaults of ``conf/trainer/default.yaml`` and the callbacks of
``conf/callbacks/default.yaml``. Switched off, as a benchmark would switch them off and as the
plain loop has none of them: the logger (the CSV file), the callbacks that write files or
log lines (checkpoints, the epoch summary, run.json), validation, and the progress bar (a
path of its own with ``--progress-bar``). Everything of a training step stays:
``training_step`` with its ``self.log`` calls and accuracy metrics, the per-step callbacks
(divergence and preemption checks), the fit loop, the data fetcher, ``batch_to_device``, the
precision plugin, the per-step scheduler, and the metric collection Lightning runs every
``log_every_n_steps``.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from torch import nn

from resnet_lab.bench.settings import BenchSettings
from resnet_lab.bench.timing import Block, PeakMemory, Window
from resnet_lab.bench.training_config import (
    kept_callbacks,
    module_options,
    optimizer_factory,
    scheduler_factory,
    trainer_options,
)
from resnet_lab.bench.workload import SyntheticBatches
from resnet_lab.module import ImageClassifier

# What the benchmark switches off in our path; the plain loop has none of it either.
SWITCHED_OFF = {
    "logger": False,  # train.py: CSVLogger, writing metrics.csv
    "limit_val_batches": 0,  # no validation between the timed steps
    "num_sanity_val_steps": 0,
    "default_root_dir": None,
}
# Warnings every fit above would print, about what the benchmark does on purpose.
EXPECTED_WARNINGS = (
    r".*validation_step.* but have no .*val_dataloader",
    r".*isinstance\(treespec, LeafSpec\)",  # Lightning 2.6 with torch >= 2.10, harmless
)


class StepWindow(L.Callback):
    """Times a fit from the end of its last warm-up step to the end of its last step."""

    def __init__(self, warmup: int, steps: int, window: Window) -> None:
        self.warmup = warmup
        self.steps = steps
        self.window = window
        self.done = 0
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        self.losses.append(loss.detach())
        self.done += 1
        if self.done == self.warmup:
            self.window.start()
        elif self.done == self.warmup + self.steps:
            self.window.stop()


def trainer_devices(device: torch.device) -> int | list[int]:
    return [device.index] if device.index is not None else 1


class LightningPath:
    """Trains ``net`` through ``ImageClassifier`` and a fresh ``lightning.Trainer`` per block.

    The module (and so the network and its compiled form) lives across blocks; each fit
    builds its optimizer and schedule anew, as the plain loop does.
    """

    def __init__(self, net: nn.Module, settings: BenchSettings, *, progress_bar: bool = False) -> None:
        self.settings = settings
        self.progress_bar = progress_bar
        self.module = ImageClassifier(
            net,
            optimizer=optimizer_factory(settings.batch_size),
            scheduler=scheduler_factory(),
            num_classes=settings.num_classes,
            **module_options(),
            channels_last=settings.channels_last,
            compile=settings.compile,
        )
        self.memory = PeakMemory(settings.torch_device)

    @property
    def net(self) -> nn.Module:
        return self.module.net

    def trainer(self, max_steps: int, callbacks: list[L.Callback], root_dir: str) -> L.Trainer:
        settings = self.settings
        # Lightning refuses Checkpoint callbacks (preemption is one: it saves on a signal only)
        # when checkpointing is off, and adds a ModelCheckpoint of its own when checkpointing
        # is on without one: on exactly when a kept callback is a Checkpoint, so neither.
        checkpointing = any(isinstance(callback, Checkpoint) for callback in callbacks)
        return L.Trainer(**trainer_options(
            **SWITCHED_OFF,
            enable_checkpointing=checkpointing,
            accelerator=settings.torch_device.type,
            devices=trainer_devices(settings.torch_device),
            precision=settings.precision,
            max_steps=max_steps,
            max_epochs=-1,
            min_epochs=None,
            deterministic=settings.deterministic,
            benchmark=settings.cudnn_benchmark,
            enable_progress_bar=self.progress_bar,
            callbacks=callbacks,
        ))

    def run(self, warmup: int, steps: int, *, profilers: Sequence[AbstractContextManager] = ()) -> Block:
        """A fresh fit of ``warmup`` untimed and ``steps`` timed steps; see ``PlainLoop.run``."""
        settings = self.settings
        timer = StepWindow(warmup, steps, Window(settings.torch_device, self.memory, profilers))
        with tempfile.TemporaryDirectory(prefix="resnet_lab_bench_") as root_dir, warnings.catch_warnings():
            for message in EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            trainer = self.trainer(warmup + steps, [timer, *kept_callbacks(root_dir)], root_dir)
            trainer.fit(self.module, train_dataloaders=SyntheticBatches(settings, warmup + steps))
        if timer.window.seconds is None:
            raise RuntimeError(f"the fit ended after {timer.done} of {warmup + steps} steps")
        return Block.of(timer.window, steps * settings.batch_size, torch.stack(timer.losses).tolist())
