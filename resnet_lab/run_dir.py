"""The run directory: what is in it, what state it is in, and who may write it.

Training, resume, evaluation, the run record, the runs viewer and the sweeper all read and
write run directories through this module, and through nothing else: the file names, the
statuses in ``run.json``, "is this a run", process liveness, atomic writes and the
exclusive claim of a directory are defined here once. docs/ARCHITECTURE.md shows the layout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import IO, Any

from omegaconf import OmegaConf

from resnet_lab.errors import ConfigError

HYDRA_DIR = ".hydra"
CONFIG_FILE = "config.yaml"
HYDRA_FILE = "hydra.yaml"
OVERRIDES_FILE = "overrides.yaml"
# The resuming command's Hydra files; the run's own .hydra/ files are never rewritten.
RESUMES_DIR = f"{HYDRA_DIR}/resumes"
RECORD_FILE = "run.json"
LOG_FILE = "train.log"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
METRICS_CSV = "csv/metrics.csv"
EVALUATIONS_DIR = "evaluations"
# Held with flock by the process that trains in the directory (claim()).
LOCK_FILE = ".lock"
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of a multirun, in its sweep directory
# The directories under paths.log_dir that group runs; a run's id leaves them out.
GROUP_DIRS = ("runs", "multiruns", "sweeps")
# A run whose process lives on another machine cannot be checked; if its record has not
# changed for this long it is taken to be dead (records are rewritten every epoch).
STALE_AFTER_S = 24 * 3600


class Status(str, Enum):
    """The status of a run. ``RUNNING``, ``TRAINED``, ``FINISHED``, ``FAILED`` and
    ``INTERRUPTED`` are written to ``run.json``; ``PRUNED`` and ``UNKNOWN`` are derived."""

    RUNNING = "running"
    TRAINED = "trained"  # training done, the test still to come
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


# What `runs list --status` offers: TRAINED shows as RUNNING (or INTERRUPTED if its process died).
SHOWN_STATUSES = tuple(s.value for s in Status if s is not Status.TRAINED)


class DamagedFile(ConfigError):
    """A run-directory file that exists but cannot be parsed."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


# -- atomic writes: at every instant the target is the old complete file or the new one


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform or file system.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file next to it, fsync it and
    ``os.replace`` it onto ``path`` (atomic within one file system)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(target)
    try:
        with open(temp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_directory(target.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporary files left by writes on this host whose process is gone."""
    removed = []
    host = socket.gethostname()
    for temp in Path(directory).glob(".*.tmp"):
        parts = temp.name.rsplit(".", 3)  # ['.last.ckpt', host, pid, 'tmp']
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit():
            continue
        pid = int(parts[2])
        if pid == os.getpid() or process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            temp.unlink()
            removed.append(temp)
    return removed


# -- processes


def process_alive(pid: int, command: str = "") -> bool | None:
    """Whether process ``pid`` on this host is alive (and, given ``command``, runs it).

    None: cannot tell. A zombie counts as dead; a reused pid running other arguments too.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    except (OSError, OverflowError):
        return None
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no procfs (macOS): alive is all we know
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = (proc / "cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
    except (OSError, IndexError):
        return None
    if state == "Z":  # exited, not yet reaped by its parent
        return False
    _, _, args = command.partition(" ")
    if not args or argv == [""]:  # no arguments to compare, or exec still under way
        return True
    return " ".join(argv).endswith(args)


# -- the files of a run


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / RECORD_FILE).is_file() or (path / HYDRA_DIR / CONFIG_FILE).is_file()


def checkpoint_run_dir(ckpt_path: str | Path) -> Path | None:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/x.ckpt``), if any."""
    path = Path(ckpt_path).expanduser().resolve()
    for candidate in (path.parent.parent, path.parent):
        if is_run_dir(candidate):
            return candidate
    return None


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` as a dict; empty when there is none yet; ``DamagedFile`` when unreadable."""
    path = Path(run_dir) / RECORD_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise DamagedFile(f"{path} cannot be read: {error.strerror}.") from None
    try:
        record = json.loads(text)
    except ValueError as error:
        raise DamagedFile(f"{path} is damaged (not valid JSON: {error}).") from None
    if not isinstance(record, dict):
        raise DamagedFile(f"{path} is damaged (it holds a {type(record).__name__}, not a record).")
    return record


def write_record(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    text = json.dumps(dict(record), indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_text(Path(run_dir) / RECORD_FILE, text)


def stored_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``.hydra/config.yaml`` as written (interpolations unresolved)."""
    path = Path(run_dir) / HYDRA_DIR / CONFIG_FILE
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except FileNotFoundError:
        raise ConfigError(f"{Path(run_dir)} is not a run directory: it has no {HYDRA_DIR}/{CONFIG_FILE}.") from None
    except Exception as error:  # noqa: BLE001 - damaged YAML is a user-facing problem
        raise DamagedFile(f"the config of run {str(run_dir)!r} ({path}) is damaged: {error}") from None
    if not isinstance(loaded, dict):
        raise DamagedFile(f"{path} is damaged: it does not hold a config mapping.")
    return loaded


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings stay values."""
    if not isinstance(tree, Mapping) or not tree:
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def diverged(record: Mapping[str, Any]) -> bool:
    return str(record.get("exception") or "").startswith("TrainingDivergedError")


def record_alive(record: Mapping[str, Any]) -> bool | None:
    """Whether the process that wrote ``record`` still runs; None when it cannot be told."""
    pid, host = record.get("pid"), record.get("host")
    if isinstance(pid, int) and host == socket.gethostname():
        return process_alive(pid, str(record.get("command", "")))
    updated = parse_time(record.get("updated"))
    if updated is not None and (datetime.now(timezone.utc) - updated).total_seconds() > STALE_AFTER_S:
        return False
    return None


def status_of(record: Mapping[str, Any]) -> Status:
    """The run's status as a reader should see it: a "running" record whose process is gone
    is INTERRUPTED (SIGKILL, a lost machine); a trial stopped by its sweep is PRUNED."""
    written = record.get("status")
    try:
        status = Status(written)
    except ValueError:
        return Status.UNKNOWN
    if status in (Status.RUNNING, Status.TRAINED):
        return Status.RUNNING if record_alive(record) is not False else Status.INTERRUPTED
    if status is Status.FAILED and str(record.get("exception") or "").startswith("TrialPruned"):
        return Status.PRUNED
    return status


# -- the exclusive claim: one process trains in a run directory at a time

_CLAIMS: dict[Path, int] = {}


def claim(run_dir: str | Path) -> Path:
    """Create ``run_dir`` if needed and hold an exclusive lock on it for the life of this
    process (``flock``: the operating system releases it when the process dies, however it
    dies). Claiming a directory this process holds already is a no-op. Returns the path."""
    path = Path(run_dir).expanduser().resolve()
    if path in _CLAIMS:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ConfigError(
            f"cannot create the run directory {path}: {error.strerror}. Give a directory you can "
            "write: paths.log_dir=<dir> (or hydra.run.dir=<dir>)."
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"run directory {path} is in use by another process ({holder}): two processes must "
            "never write one run. Wait for it to end or stop it (on SIGTERM it saves a "
            "checkpoint and exits), then resume."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    _CLAIMS[path] = fd
    return path


def release(run_dir: str | Path) -> None:
    fd = _CLAIMS.pop(Path(run_dir).expanduser().resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the lock


def holds(run_dir: str | Path) -> bool:
    return Path(run_dir).expanduser().resolve() in _CLAIMS


def log_bytes(run_dir: str | Path) -> int:
    """The size of a run directory's ``train.log`` (0 when there is none)."""
    try:
        return (Path(run_dir) / LOG_FILE).stat().st_size
    except OSError:
        return 0


def remove_if_unstarted(run_dir: str | Path, own_log: bool = False) -> bool:
    """Remove a run directory that holds only what was written before the job began (its
    ``.hydra`` files, ``train.log``, the lock): the input was refused and nothing ran.
    ``train.log`` must be empty, unless ``own_log``: the caller saw it empty when its job
    began, so every line in it is that job's own. Anything else in the directory keeps it.
    Returns whether it was removed."""
    path = Path(run_dir)
    try:
        names = {p.name for p in path.iterdir()}
        if names - {HYDRA_DIR, LOG_FILE, LOCK_FILE}:
            return False
        if not own_log and log_bytes(path):
            return False
        hydra_dir = path / HYDRA_DIR
        if hydra_dir.exists() and {p.name for p in hydra_dir.iterdir()} - {CONFIG_FILE, HYDRA_FILE, OVERRIDES_FILE}:
            return False
        release(path)
        for child in (hydra_dir / CONFIG_FILE, hydra_dir / HYDRA_FILE, hydra_dir / OVERRIDES_FILE,
                      path / LOG_FILE, path / LOCK_FILE):
            with contextlib.suppress(FileNotFoundError):
                child.unlink()
        with contextlib.suppress(FileNotFoundError):
            hydra_dir.rmdir()
        path.rmdir()
    except OSError:
        return False  # left in place: a stray directory is no reason to hide the error that led here
    return True


def remove_sweep_if_unstarted(sweep_dir: str | Path) -> bool:
    """Remove a sweep directory that holds nothing but Hydra's ``multirun.yaml``: its first
    job was refused and no job ran. Returns whether it was removed."""
    path = Path(sweep_dir)
    try:
        if {p.name for p in path.iterdir()} != {MULTIRUN_FILE}:
            return False
        (path / MULTIRUN_FILE).unlink()
        path.rmdir()
    except OSError:
        return False
    return True
