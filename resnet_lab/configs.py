"""Where the configs live.

``conf/`` sits at the repository root in a source checkout and inside the package in a
wheel (pyproject's force-include); ``config_dir()`` finds whichever is there.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(
        f"resnet_lab's configs were not found in {_PACKAGE_DIR / 'conf'} or "
        f"{_PACKAGE_DIR.parent / 'conf'}; reinstall the package."
    )


def register_resolvers(resolvers: Iterable[tuple[str, Any, bool]]) -> None:
    """Register ``(name, function, use_cache)`` resolvers; entry points call this with the
    ones their configs use."""
    for name, function, use_cache in resolvers:
        OmegaConf.register_new_resolver(name, function, replace=True, use_cache=use_cache)


def config_groups() -> tuple[str, ...]:
    """The config groups (folders of conf/)."""
    return tuple(sorted(p.name for p in config_dir().iterdir() if p.is_dir()))
