"""Timing and peak-memory primitives: device synchronization at window boundaries only.

A measurement window starts after the warm-up steps and ends after the timed steps; the
device is synchronized at both boundaries and nowhere in between, so the steps inside run
as they would in training (a synchronization per step would itself slow a GPU down).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _peak_rss_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    # Writing 5 resets the process's peak resident set size (Linux >= 4.0, proc(5)).
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory over a window.

    On CUDA: the caching allocator's peak of allocated tensor memory (``max_memory_allocated``).
    On CPU: the process's peak resident set size, the whole process (interpreter, libraries,
    data) included; None where the peak cannot be reset (not Linux).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.kind = "cuda_max_memory_allocated"
        elif _reset_peak_rss() and _peak_rss_mb() is not None:
            self.kind = "process_peak_rss"
        else:
            self.kind = None

    def reset(self) -> None:
        if self.kind == "cuda_max_memory_allocated":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind == "process_peak_rss":
            _reset_peak_rss()

    def read_mb(self) -> float | None:
        if self.kind == "cuda_max_memory_allocated":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.kind == "process_peak_rss":
            return _peak_rss_mb()
        return None


class Window:
    """Marks the boundaries of one timed window: ``start()`` after warm-up, ``stop()`` at the end.

    ``profilers`` (context managers, e.g. ``torch.profiler.profile`` or ``cProfile.Profile``)
    are entered at the start and exited at the end, so that they see the timed steps only.
    """

    def __init__(self, device: torch.device, memory: PeakMemory, profilers: Sequence[AbstractContextManager] = ()) -> None:
        self.device = device
        self.memory = memory
        self.profilers = list(profilers)
        self._start: float | None = None
        self._cpu_start = 0.0
        self.seconds: float | None = None
        self.cpu_seconds: float | None = None
        self.peak_memory_mb: float | None = None

    def start(self) -> None:
        synchronize(self.device)
        self.memory.reset()
        for profiler in self.profilers:
            profiler.__enter__()
        self._cpu_start = time.process_time()
        self._start = time.perf_counter()

    def stop(self) -> None:
        synchronize(self.device)
        assert self._start is not None, "stop() before start()"
        self.seconds = time.perf_counter() - self._start
        self.cpu_seconds = time.process_time() - self._cpu_start
        for profiler in reversed(self.profilers):
            profiler.__exit__(None, None, None)
        self.peak_memory_mb = self.memory.read_mb()


@dataclass
class Block:
    """One timed window: ``images`` processed in ``seconds`` of wall time, using
    ``cpu_seconds`` of this process's CPU time (all its threads); ``losses`` of every step."""

    images: int
    seconds: float
    cpu_seconds: float
    peak_memory_mb: float | None
    losses: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, window: Window, images: int, losses: list[float] | None = None) -> Block:
        assert window.seconds is not None and window.cpu_seconds is not None, "the window never closed"
        return cls(images, window.seconds, window.cpu_seconds, window.peak_memory_mb, losses or [])

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def images_per_cpu_s(self) -> float:
        """Images per second of CPU time: on a CPU shared with other processes, this moves
        far less than the wall-clock rate, since time spent waiting for a core is not counted."""
        return self.images / self.cpu_seconds


def summary(values: list[float]) -> dict[str, float | list[float]]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": list(values),
    }
