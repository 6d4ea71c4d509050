"""Configs of runs started by earlier versions of resnet_lab, brought to today's keys so that
they resume: keys and classes that moved are renamed, and keys that did not exist yet are
taken from today's config of the same command (they cannot have been set differently).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# Keys that moved (dotted paths), and `_target_`s that moved to another module.
MOVED_KEYS = {"trainer.compile": "module.compile", "trainer.channels_last": "module.channels_last"}
MOVED_TARGETS = {
    "resnet_lab.csv_logger.CSVLogger": "resnet_lab.loggers.CSVLogger",
    "resnet_lab.checkpointing.LastCheckpoint": "resnet_lab.callbacks.LastCheckpoint",
}
# Dict-of-configs groups: an entry missing from an old run was off, not unknown.
COLLECTIONS = ("callbacks", "logger")


def _pop(tree: dict, dotted: str) -> tuple[bool, Any]:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return False, None
    return (True, tree.pop(leaf)) if leaf in tree else (False, None)


def _set_absent(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree.setdefault(leaf, value)


def _rename_targets(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("_target_") in MOVED_TARGETS:
            node["_target_"] = MOVED_TARGETS[node["_target_"]]
        for value in node.values():
            _rename_targets(value)


def _fill_absent(stored: dict, current: Mapping, top: bool) -> None:
    for key, value in current.items():
        if key == "hydra":
            continue
        if key not in stored:
            stored[key] = copy.deepcopy(value)
        elif (isinstance(value, Mapping) and isinstance(stored[key], dict) and not (top and key in COLLECTIONS)
              and stored[key].get("_target_") == value.get("_target_")):
            _fill_absent(stored[key], value, top=False)


def migrate(stored: Mapping[str, Any], current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``stored`` (a run's ``.hydra/config.yaml``, unresolved) with moved keys and classes
    renamed, and, given ``current`` (today's config of the command), the keys it lacks taken
    from it where the node they belong to builds the same thing."""
    config = copy.deepcopy(dict(stored))
    for old, new in MOVED_KEYS.items():
        found, value = _pop(config, old)
        if found:
            _set_absent(config, new, value)
    _rename_targets(config)
    if current is not None:
        _fill_absent(config, current, top=True)
    return config
