"""Preemption: on SIGTERM or SIGUSR1 (and submitit's signal under ``hydra/launcher=slurm``),
save ``last.ckpt`` at a clean point and exit with 128 + the signal number; under SLURM,
requeue the job on SIGUSR1.

The signal handler only records the signal. The callback stops at the end of the current
training batch; a signal on an epoch's last batch or during its validation waits until the
epoch's validation, its checkpoints and its logged training metrics are done, and the run
stops as the next epoch (or the end of training) begins. Why Lightning's own handlers are
replaced, and how submitit's requeue is kept: docs/RELIABILITY.md, "Preemption".
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from resnet_lab.callbacks.checkpoints import settle_best_checkpoints

log = logging.getLogger("resnet_lab")


class Preempted(SIGTERMException):
    """Raised to stop training after a preemption signal; exits with 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def slurm_job_id() -> str | None:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def submitit_signal() -> int | None:
    """The signal submitit sends a job before its time limit or on preemption (SIGUSR2
    unless ``SUBMITIT_PREEMPT_SIGNAL`` names another); None outside a submitit job."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal, f"SIG{name}", None)


def requeue_slurm_job(job_id: str) -> bool:
    """``scontrol requeue <job>``: the job goes back to the queue and reruns its script."""
    if not re.fullmatch(r"[0-9_]+", job_id):
        log.warning("not requeuing: %r is not a SLURM job id", job_id)
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("could not requeue SLURM job %s: %s", job_id, error)
        return False
    if result.returncode != 0:
        log.warning("scontrol requeue %s failed (%d): %s", job_id, result.returncode, result.stderr.strip())
        return False
    log.info("requeued SLURM job %s", job_id)
    return True


class Preemption(Checkpoint):
    """Save and stop on SIGTERM / SIGUSR1 (see the module docstring).

    A ``Checkpoint`` subclass so that Lightning calls it after the other callbacks: the
    state it saves includes their work for the batch (an EMA update, for one).

    Args:
        dirpath: where ``filename`` is written (the run's checkpoint directory).
        filename: the checkpoint's name; ``last.ckpt`` is what ``resume`` looks for first.
        requeue: requeue the SLURM job on SIGUSR1; None: when running under SLURM.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt", requeue: bool | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.requeue = requeue
        self.received: int | None = None
        self._installed = False
        self._deferred = False
        self._saved_step: int | None = None
        self._submitit: tuple[int, Any] | None = None  # (signal, submitit's handler)

    def _handler(self, signum: int, frame: Any) -> None:
        # No logging or I/O here: the handler runs between two bytecodes of whatever the
        # main thread was doing, possibly inside the logging module itself.
        if self.received is None:
            self.received = signum

    def _install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                signal.signal(signum, self._handler)
        submitit = submitit_signal()
        if submitit is not None:  # teardown gives submitit its handler back
            self._submitit = (submitit, signal.signal(submitit, self._handler))
        self._installed = True

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning has installed its own handlers (which it restores when fit ends).
        self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning restores its own SIGTERM/SIGUSR1 handlers when fit ends; submitit's
        # signal is not one of them.
        if self._installed and self._submitit is not None and threading.current_thread() is threading.main_thread():
            signum, previous = self._submitit
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._installed = False

    def _requested(self, trainer: L.Trainer) -> bool:
        local = self.received is not None
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(local, all=False))
        return local

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self._deferred or not self._requested(trainer):
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # Let this epoch's validation, checkpoints and metrics happen first.
            log.info("preemption signal received on the epoch's last batch: stopping once the epoch is done")
            self._deferred = True
            return
        self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Save now, at the same point as the epoch's own last.ckpt; stop only once Lightning has
        # logged the epoch's training metrics, which it does after this hook.
        if self._deferred or self._requested(trainer):
            self._deferred = True
            self._save(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._deferred:
            self._stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._deferred:
            self._stop(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if self._saved_step != trainer.global_step:
            # After this epoch's validation, the best checkpoint decides first (callbacks/checkpoints.py).
            if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
                settle_best_checkpoints(trainer, trainer.lightning_module, "on_validation_end")
                settle_best_checkpoints(trainer, trainer.lightning_module, "on_train_epoch_end")
            trainer.save_checkpoint(self.dirpath / self.filename, weights_only=False)

    def _stop(self, trainer: L.Trainer) -> None:
        signum = self.received if self.received is not None else signal.SIGTERM
        name = signal.Signals(signum).name
        path = self.dirpath / self.filename
        self._save(trainer)
        message = f"received {name} at step {trainer.global_step} (epoch {trainer.current_epoch + 1}): saved {path}"
        if trainer.is_global_zero:
            requeue = self.requeue if self.requeue is not None else slurm_job_id() is not None
            job = slurm_job_id()
            if signum == getattr(signal, "SIGUSR1", None) and requeue and job:
                requeue_slurm_job(job)
            run_dir = self.dirpath.parent
            log.warning("%s; continue with: python -m resnet_lab resume=%s", message, run_dir)
        if self._submitit is not None and signum == self._submitit[0] and callable(self._submitit[1]):
            self._hand_over_to_submitit(signum)
        raise Preempted(signum)

    def _hand_over_to_submitit(self, signum: int) -> None:
        """Run submitit's handler now that the state is saved: it requeues the job (rank 0
        only; it returns on the others) and then exits, which becomes ``Preempted``."""
        try:
            self._submitit[1](signum, None)
        except SystemExit:
            pass  # submitit requeued the job and asked the process to end
        except Exception as error:  # noqa: BLE001 - e.g. "timed-out too many times": nothing to requeue
            log.warning("submitit did not requeue the job: %s", error)
