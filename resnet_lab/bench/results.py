"""What a section returns: measurements (images/s over repeated blocks) and ratios between them."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from resnet_lab.bench.timing import Block, summary


@dataclass
class Measurement:
    section: str
    name: str
    images_per_s: dict[str, Any]  # median, min, max, samples (one per timed block)
    images_per_cpu_s: dict[str, Any] | None  # the same per second of this process's CPU time
    peak_memory_mb: float | None  # the highest of the blocks' peaks
    memory_kind: str | None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_blocks(cls, section: str, name: str, blocks: list[Block], memory_kind: str | None, **details) -> Measurement:
        peaks = [b.peak_memory_mb for b in blocks if b.peak_memory_mb is not None]
        return cls(
            section=section,
            name=name,
            images_per_s=summary([b.images_per_s for b in blocks]),
            images_per_cpu_s=summary([b.images_per_cpu_s for b in blocks]),
            peak_memory_mb=max(peaks) if peaks else None,
            memory_kind=memory_kind,
            details=details,
        )

    @classmethod
    def from_rates(cls, section: str, name: str, rates: list[float], **details) -> Measurement:
        """From images/s measured elsewhere (no CPU time, no peak memory)."""
        return cls(section, name, summary(rates), None, None, None, details)

    @property
    def median(self) -> float:
        return self.images_per_s["median"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# What a ratio divides: wall-clock images/s (the measure), or images per second of the
# process's CPU time (on a CPU shared with other processes, the steadier estimate of the same).
BASES = {"wall": "images_per_s", "cpu_time": "images_per_cpu_s"}


@dataclass
class Ratio:
    """``numerator / denominator`` throughput: the median of the ratios of blocks run side by
    side (block i of one path against block i of the other), so that a slow spell of the
    machine, which hits both blocks of a pair, cancels."""

    section: str
    numerator: str
    denominator: str
    value: float
    samples: list[float]
    target: float | None = None
    basis: str = "wall"

    @classmethod
    def paired(
        cls, section: str, numerator: Measurement, denominator: Measurement,
        target: float | None = None, basis: str = "wall",
    ) -> Ratio:
        key = BASES[basis]
        a_samples, b_samples = getattr(numerator, key)["samples"], getattr(denominator, key)["samples"]
        samples = [a / b for a, b in zip(a_samples, b_samples)]
        return cls(section, numerator.name, denominator.name, statistics.median(samples), samples, target, basis)

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.value >= self.target

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "meets_target": self.meets_target}


@dataclass
class SectionResult:
    measurements: list[Measurement] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: SectionResult) -> None:
        self.measurements += other.measurements
        self.ratios += other.ratios
        self.notes += other.notes
