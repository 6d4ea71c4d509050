"""Which config differences a resumed run may have: runtime settings may change, the rest
must match, or the resumed run would no longer be the run it continues."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resnet_lab.run_dir import flatten

# Settings that may differ between a run and the command that resumes it: where files are,
# how the run is watched and reported, and the resume options themselves. None of them
# changes what is computed. Patterns are fnmatch patterns over dotted keys.
RUNTIME_KEYS = (
    "resume",
    "ckpt_path",
    "trust_checkpoint",
    "test",
    "tags",
    "paths",
    "paths.*",
    "logger",
    "logger.*",
    "data.num_workers",
    "data.pin_memory",
    "data.root",
    "data.system_dirs",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.profiler",
    "trainer.profiler.*",
    "callbacks.epoch_summary",
    "callbacks.epoch_summary.*",
    "callbacks.last_checkpoint.every_n_train_steps",
)
# How many differing keys a message lists.
MAX_LISTED = 15


def is_runtime_key(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in RUNTIME_KEYS)


def task_container(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The job's config as plain containers, interpolations unresolved, without ``hydra``."""
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    container.pop("hydra", None)
    return container


def config_differences(old: Mapping, new: Mapping) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every non-runtime key that differs.

    Values are compared as written (interpolations unresolved), so a path that resolves
    differently from another directory is not a difference, and ``${data.num_classes}`` is
    compared through the key it points to.
    """
    flat_old, flat_new = flatten(old), flatten(new)
    missing = object()
    differences = []
    for key in sorted(set(flat_old) | set(flat_new)):
        if is_runtime_key(key):
            continue
        before, after = flat_old.get(key, missing), flat_new.get(key, missing)
        if before != after:
            differences.append((key, "(absent)" if before is missing else before,
                                "(absent)" if after is missing else after))
    return differences


def format_differences(differences: Sequence[tuple[str, Any, Any]]) -> str:
    lines = [f"    {key}: {old!r} -> {new!r}" for key, old, new in differences[:MAX_LISTED]]
    if len(differences) > MAX_LISTED:
        lines.append(f"    ... and {len(differences) - MAX_LISTED} more")
    return "\n".join(lines)


def override_keys(overrides: Iterable[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [override.key_or_group for override in parsed]


def non_runtime_overrides(overrides: Iterable[str]) -> list[str]:
    return [key for key in override_keys(overrides) if not key.startswith("hydra") and not is_runtime_key(key)]
