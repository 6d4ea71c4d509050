"""``run.json``: the status and headline numbers of one run, kept current while it trains.

The runs viewer and ``resume=auto`` read it; nothing else needs to parse logs. It is
rewritten atomically (temporary file + ``os.replace``), so a reader never sees half a file,
and it records the process id, so a run whose process died without a word (SIGKILL, power
loss) can be told apart from one still going.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

RECORD_NAME = "run.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RECORD_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RunRecord(L.Callback):
    """Keeps ``<run_dir>/run.json`` up to date: status, epochs, best and final metrics."""

    def __init__(self, run_dir: str, monitor: str = "val/acc_top1", mode: str = "max") -> None:
        self.path = Path(run_dir) / RECORD_NAME
        self.monitor = monitor
        self.mode = mode
        self.record: dict[str, Any] = {}
        self._t0 = time.monotonic()

    @rank_zero_only
    def _save(self, **changes: Any) -> None:
        self.record.update(changes, updated=_now(), wall_time_s=round(self._elapsed(), 3))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.record)

    def _elapsed(self) -> float:
        return self.record.get("wall_time_offset_s", 0.0) + time.monotonic() - self._t0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        previous = read_record(self.path.parent) or {}
        self._t0 = time.monotonic()
        self.record = {
            **previous,
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv),
            # resume=auto tells a requeued SLURM job's own earlier record from another job's.
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "started": previous.get("started", _now()),
            "ended": None,
            "exception": None,  # a resumed run's earlier failure is history, not its state
            "monitor": self.monitor,
            "epochs_planned": trainer.max_epochs,
            "epochs_done": previous.get("epochs_done", 0),
            # A resumed run keeps counting its wall time from where it stopped.
            "wall_time_offset_s": previous.get("wall_time_s", 0.0),
            "metrics": previous.get("metrics", {}),
            "best": previous.get("best", {}),
        }
        self._save()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = _numbers(trainer.callback_metrics)
        best = dict(self.record.get("best", {}))
        value = metrics.get(self.monitor)
        if value is not None:
            better = max if self.mode == "max" else min
            if best.get(self.monitor) is None or better(value, best[self.monitor]) == value:
                best = {self.monitor: value, "epoch": trainer.current_epoch}
        self._save(
            epochs_done=trainer.current_epoch + 1,
            global_step=trainer.global_step,
            metrics={**self.record.get("metrics", {}), **metrics},
            best=best,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Also reached after a graceful interrupt (Ctrl-C), which Lightning flags.
        status = "interrupted" if trainer.interrupted else "trained"
        # The last epoch's training metrics are logged after its validation, so only now are
        # they in callback_metrics (a resumed run would otherwise keep an older epoch's).
        metrics = {**self.record.get("metrics", {}), **_numbers(trainer.callback_metrics)}
        self._save(status=status, global_step=trainer.global_step, metrics=metrics)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = _numbers({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        self._save(metrics={**self.record.get("metrics", {}), **metrics})

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Ctrl-C, and SIGTERM/SIGUSR1 preemption (resnet_lab.callbacks.preemption): resumable.
        status = "interrupted" if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) else "failed"
        self._save(status=status, ended=_now(), exception=f"{type(exception).__name__}: {exception}")

    def finish(self) -> dict[str, Any]:
        """Mark the run finished (called by ``train`` once fitting and testing are done)."""
        if self.record.get("status") in ("trained", "running"):
            self._save(status="finished", ended=_now())
        return self.record
