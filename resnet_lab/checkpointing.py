"""Writing checkpoints so that a crash never destroys one, and reading them safely.

Writing. Lightning's ``TorchCheckpointIO`` serializes a checkpoint into memory and writes
it through an fsspec "transaction", which for local files writes a temporary file made by
``tempfile.mkstemp()`` in the *system* temp directory and then ``shutil.move``s it onto
the target. When the temp directory and the run directory are on different file systems
(node-local ``/tmp`` and a shared ``/scratch`` or NFS run directory, the common cluster
layout) the move is a copy that overwrites ``last.ckpt`` in place: a kill during the copy
leaves a truncated ``last.ckpt`` where a good one was. Nothing is fsynced either, so a
power loss can leave an empty file behind a completed rename, the checkpoint is held in
memory twice (buffer plus copy), and a killed save leaves its temporary file in ``/tmp``
for good. ``AtomicCheckpointIO`` writes ``torch.save`` straight into a temporary file
*next to* the target, fsyncs it, ``os.replace``s it onto the target (atomic within one
file system) and fsyncs the directory: at every instant the target is either the old
complete file or the new complete file.

Reading. Checkpoints are unpickled with ``torch.load(weights_only=True)``, which builds only
tensors and plain containers and refuses anything that would import and call code. A file
that needs more is refused with a ``CheckpointError`` naming what it wanted to import,
unless the user passes ``trust_checkpoint=true``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from resnet_lab.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

# What a Lightning training checkpoint holds beyond weights; without these a file cannot
# continue a run (a weights-only file, or a torchvision/timm state dict).
TRAINING_STATE_KEYS = ("state_dict", "optimizer_states", "loops", "epoch", "global_step")
# How many names an error lists per kind of mismatch.
MAX_LISTED = 20
TRUST_HINT = (
    "If you know where the file comes from and trust it, pass trust_checkpoint=true to "
    "load it with full unpickling."
)


def _temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform or file system.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files left by saves on this host whose process is gone."""
    removed = []
    host = socket.gethostname()
    for temp in Path(directory).glob(".*.tmp"):
        parts = temp.name.rsplit(".", 3)  # ['.last.ckpt', host, pid, 'tmp']
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit():
            continue
        pid = int(parts[2])
        if pid == os.getpid() or _process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            temp.unlink()
            removed.append(temp)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_atomic(payload: Any, path: str | Path) -> None:
    """``torch.save(payload, path)`` such that ``path`` is never left half written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temporary_name(target)
    try:
        with open(temp, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_directory(target.parent)


def _unsafe_globals(error: BaseException) -> list[str]:
    return sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error))))


def load_checkpoint_file(
    path: str | Path,
    *,
    trusted: bool = False,
    map_location: Any = "cpu",
    mmap: bool = False,
    what: str = "checkpoint",
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only`` unpickling; every failure is a ``CheckpointError``.

    ``what`` names the file's role in messages (``ckpt_path``, ``checkpoint``). ``mmap`` maps the
    tensor data instead of reading it, for a quick look at a large file.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise CheckpointError(f"{what} {str(file)!r} does not exist.")
    if not file.is_file():
        raise CheckpointError(f"{what} {str(file)!r} is a directory, not a checkpoint file.")
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=not trusted, mmap=mmap)
    except pickle.UnpicklingError as error:
        wanted = _unsafe_globals(error)
        if "Weights only load failed" not in str(error):
            raise CheckpointError(
                f"{what} {str(file)!r} is not a PyTorch checkpoint ({error})."
            ) from None
        listed = ", ".join(wanted) if wanted else "Python objects other than tensors"
        raise CheckpointError(
            f"{what} {str(file)!r} refused: loading it would import and call {listed}, and "
            "unpickling such a file can run any code its author chose. Checkpoints written "
            f"by resnet_lab need none of that. {TRUST_HINT}"
        ) from None
    except Exception as error:  # truncated zip, not a torch file, unreadable ...
        raise CheckpointError(f"{what} {str(file)!r} {_why_unreadable(file, error)}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{what} {str(file)!r} holds a {type(checkpoint).__name__}, not a checkpoint dictionary."
        )
    return checkpoint


def _why_unreadable(file: Path, error: BaseException) -> str:
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0].rstrip(".")
    try:
        with open(file, "rb") as handle:
            head = handle.read(4)
    except OSError as os_error:
        return f"cannot be read: {os_error}."
    if head == b"PK\x03\x04":  # torch.save writes a zip archive; this one does not open
        return (
            "is truncated or damaged: it starts like a checkpoint but cannot be read to the end "
            f"(typically a copy or save that was interrupted) ({detail})."
        )
    return "is not a PyTorch checkpoint (torch.save writes zip archives; this file is not one)."


def require_training_state(checkpoint: Mapping[str, Any], what: str) -> None:
    """Refuse a file that holds weights but not the optimizer and loop state a resume needs."""
    missing = [key for key in TRAINING_STATE_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{what} is not a training checkpoint: it lacks {', '.join(missing)}, so training "
            "cannot continue from it. To start a new run from its weights, use "
            "model.weights=<file> instead."
        )


def _shape(value: Any) -> str:
    return "(" + ", ".join(str(n) for n in tuple(value.shape)) + ")"


def _listing(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    more = [f"    ... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else []
    return [f"  {title} ({len(lines)}):", *(f"    {line}" for line in lines[:MAX_LISTED]), *more]


def check_state_dict_fits(
    expected: Mapping[str, Any], found: Mapping[str, Any], what: str, *, hint: str = ""
) -> None:
    """Raise a ``CheckpointError`` listing every name and shape that differs.

    ``expected`` and ``found`` map parameter names to tensors (anything with ``.shape``).
    """
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    mismatched = [
        key for key in expected
        if key in found and tuple(found[key].shape) != tuple(expected[key].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [
        f"{what} was trained with another architecture than the configured model. {hint}".rstrip(),
        *_listing("in the model, not in the checkpoint", [f"{k} {_shape(expected[k])}" for k in missing]),
        *_listing("in the checkpoint, not in the model", [f"{k} {_shape(found[k])}" for k in unexpected]),
        *_listing("shapes differ (checkpoint vs model)",
                  [f"{k} {_shape(found[k])} vs {_shape(expected[k])}" for k in mismatched]),
    ]
    raise CheckpointError("\n".join(lines))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with crash-safe writes and safe reads (see the module docstring).

    Args:
        trusted: load checkpoints with full unpickling (``weights_only=False``); only for
            files whose origin the user vouches for.
    """

    def __init__(self, trusted: bool = False) -> None:
        super().__init__()
        self.trusted = trusted

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_atomic(checkpoint, path)

    def load_checkpoint(
        self, path, map_location: Callable | Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=not self.trusted)
        return load_checkpoint_file(
            path, trusted=self.trusted, map_location=map_location
        )


def _is_local(path) -> bool:
    return type(get_filesystem(str(path))).__name__ == "LocalFileSystem"


class LastCheckpoint(Checkpoint):
    """``<dirpath>/last.ckpt``: the newest training state, which ``resume`` continues from.

    Written after every validation (or at the end of an epoch without one) and, with
    ``every_n_train_steps=N``, also every N optimizer steps. Lightning 2.6's
    ``ModelCheckpoint(save_last=True)`` with a monitored metric writes ``last.ckpt`` only
    when the metric improved (a top-k save at that step), so its ``last.ckpt`` can be many
    epochs old; this callback always writes it.

    The step trigger skips the last batch of an epoch: a checkpoint written there resumes
    past that epoch's validation (Lightning counts the epoch as done and does not run it),
    and the after-validation checkpoint follows a moment later anyway.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None, filename: str = "last.ckpt") -> None:
        if every_n_train_steps is not None and (not isinstance(every_n_train_steps, int) or every_n_train_steps < 1):
            raise ConfigError(
                f"callbacks.last_checkpoint.every_n_train_steps must be a positive integer or null "
                f"(off), got {every_n_train_steps!r}."
            )
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.every_n_train_steps = every_n_train_steps
        self._saved_step: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or self._saved_step == trainer.global_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0 and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)  # no-op when validation at this step already saved


def with_checkpoint_io(plugins: Any, *, trusted: bool) -> list[Any]:
    """Trainer ``plugins`` (configs or objects) plus ``AtomicCheckpointIO``, unless one
    of them already is a ``CheckpointIO``."""
    from hydra.utils import instantiate
    from lightning.fabric.plugins import CheckpointIO

    if plugins is None:
        plugins = []
    elif not isinstance(plugins, (list, tuple)):
        plugins = [plugins]
    built = [instantiate(p) if isinstance(p, Mapping) and "_target_" in p else p for p in plugins]
    if not any(isinstance(p, CheckpointIO) for p in built):
        built.append(AtomicCheckpointIO(trusted=trusted))
    return built
