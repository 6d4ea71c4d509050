"""``run.json``: the status and headline numbers of one run, kept current while it trains.

The runs viewer and ``resume=auto`` read it (through ``resnet_lab.run_dir``); nothing else
needs to parse logs. It records the process id, so a run whose process died without a word
(SIGKILL, power loss) can be told apart from one still going.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from resnet_lab.run_dir import DamagedFile, Status, now, read_record, write_record


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


class RunRecord(L.Callback):
    """Keeps ``<run_dir>/run.json`` up to date: status, epochs, best and final metrics.

    The best epoch follows the rule of the best checkpoint (Lightning's ``ModelCheckpoint``
    replaces its best only on a strictly better value, ``torch.gt``/``torch.lt``): a tie
    keeps the earlier epoch, in ``run.json`` as in ``best.ckpt``.
    """

    def __init__(self, run_dir: str, monitor: str = "val/acc_top1", mode: str = "max") -> None:
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.mode = mode
        self.record: dict[str, Any] = {}
        self._t0 = time.monotonic()

    @rank_zero_only
    def _save(self, **changes: Any) -> None:
        self.record.update(changes, updated=now(), wall_time_s=round(self._elapsed(), 3))
        write_record(self.run_dir, self.record)

    def _elapsed(self) -> float:
        return self.record.get("wall_time_offset_s", 0.0) + time.monotonic() - self._t0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        try:
            previous = read_record(self.run_dir)
        except DamagedFile:
            previous = {}  # a damaged record of a resumed run is replaced by a sound one
        self._t0 = time.monotonic()
        self.record = {
            **previous,
            "status": Status.RUNNING,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv),
            # resume=auto tells a requeued SLURM job's own earlier record from another job's.
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "started": previous.get("started", now()),
            "ended": None,
            "exception": None,  # a resumed run's earlier failure is history, not its state
            "monitor": self.monitor,
            "epochs_planned": trainer.max_epochs,
            "world_size": trainer.world_size,  # processes that train together
            "epochs_done": previous.get("epochs_done", 0),
            # A resumed run keeps counting its wall time from where it stopped.
            "wall_time_offset_s": previous.get("wall_time_s", 0.0),
            "metrics": previous.get("metrics", {}),
            "best": previous.get("best", {}),
        }
        self._save()

    def _best(self, value: float | None, epoch: int) -> dict[str, Any]:
        best = dict(self.record.get("best", {}))
        previous = best.get(self.monitor)
        if value is not None and (previous is None or (value > previous if self.mode == "max" else value < previous)):
            best = {self.monitor: value, "epoch": epoch}
        return best

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before any on_validation_end hook: one may end the run (a sweep's pruning does).
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = numbers(trainer.callback_metrics)
        self._save(
            epochs_done=trainer.current_epoch + 1,
            global_step=trainer.global_step,
            metrics={**self.record.get("metrics", {}), **metrics},
            best=self._best(metrics.get(self.monitor), trainer.current_epoch),
        )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The previous epoch's training metrics are aggregated only after its last hook.
        if trainer.current_epoch > 0 and self.record:
            self._save(metrics={**self.record.get("metrics", {}), **numbers(trainer.callback_metrics)})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Also reached after a graceful interrupt (Ctrl-C), which Lightning flags.
        status = Status.INTERRUPTED if trainer.interrupted else Status.TRAINED
        metrics = {**self.record.get("metrics", {}), **numbers(trainer.callback_metrics)}
        self._save(status=status, global_step=trainer.global_step, metrics=metrics)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = numbers({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        self._save(metrics={**self.record.get("metrics", {}), **metrics})

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Ctrl-C, and SIGTERM/SIGUSR1 preemption (resnet_lab.callbacks.preemption): resumable.
        status = Status.INTERRUPTED if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) else Status.FAILED
        self._save(status=status, ended=now(), exception=f"{type(exception).__name__}: {exception}")

    def finish(self) -> dict[str, Any]:
        """Mark the run finished (called by ``train`` once fitting and testing are done)."""
        if self.record.get("status") in (Status.TRAINED, Status.RUNNING):
            self._save(status=Status.FINISHED, ended=now())
        return self.record
