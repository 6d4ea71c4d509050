"""Keys that nothing reads: a typo (``+optimizer.lrr=0.1``, ``+foo=1``) or a field a recipe set
for another option of a group (``experiment=degradation scheduler=cosine`` keeps the recipe's
``scheduler.milestones``). Each is refused with the nearest known key, before anything is
built, instead of a ``TypeError`` from deep inside instantiation (or nothing at all)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resnet_lab.configs import config_dir, config_groups
from resnet_lab.errors import ConfigError

# Keys of a `_target_` node that Hydra itself reads.
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
# Top-level keys set outside conf/train.yaml: Hydra's node and the Optuna sweeper's trial handle.
EXTRA_TOP_LEVEL = ("hydra", "optuna_trial")


def _nearest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else ""


def known_top_level_keys() -> list[str]:
    primary = OmegaConf.load(config_dir() / "train.yaml")
    return sorted({str(k) for k in primary if k != "defaults"} | set(config_groups()) | set(EXTRA_TOP_LEVEL))


def check_top_level(cfg: DictConfig) -> None:
    known = known_top_level_keys()
    for key in cfg:
        if key not in known:
            raise ConfigError(
                f"{key} is not a setting of resnet_lab, so nothing would read it.{_nearest(str(key), known)} "
                f"Top-level settings: {', '.join(k for k in known if k not in EXTRA_TOP_LEVEL)}."
            )


def _accepted(target: Any) -> set[str] | None:
    """The keyword arguments ``target`` accepts; None when it takes any (``**kwargs``) that
    cannot be followed. A resnet_lab class that hands ``**kwargs`` to its base class is
    followed up its bases."""
    names: set[str] = set()
    classes = inspect.getmro(target) if inspect.isclass(target) else (target,)
    for owner in classes:
        function = owner.__init__ if inspect.isclass(owner) else owner
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names - {"self"}
        if not str(getattr(owner, "__module__", "")).startswith("resnet_lab."):
            return None
    return None


def _target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node:
        yield path, node
    for key in node:
        if path == "" and key == "hydra":
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from _target_nodes(child, f"{path}.{key}" if path else str(key))


def _recipe_hint(path: str, key: str) -> str:
    """Which experiment set ``path.key``, when an experiment is chosen and sets it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    choices = HydraConfig.get().runtime.choices
    experiment = choices.get("experiment")
    group = path.split(".")[0]
    if not experiment:
        return ""
    source = _recipe_setting(experiment, [*path.split("."), key])
    if source is None:
        return ""
    via = f" (from experiment={source}, which it builds on)" if source != experiment else ""
    return (
        f" experiment={experiment} sets {path}.{key}{via} for the {group} it was written for; with "
        f"{group}={choices.get(group)} that key does not apply: drop it with ~{path}.{key}, or keep "
        f"the recipe's {group}."
    )


def _recipe_setting(experiment: str, parts: list[str], seen: tuple[str, ...] = ()) -> str | None:
    """The recipe that sets the key at ``parts``: ``experiment`` itself or one it includes
    through its defaults list (``degradation`` builds on ``cifar10_resnet56_paper``)."""
    try:
        recipe = OmegaConf.to_container(OmegaConf.load(config_dir() / "experiment" / f"{experiment}.yaml"))
    except Exception:  # noqa: BLE001 - an experiment from --config-dir: no hint
        return None
    node: Any = recipe
    for part in parts:
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None:
        return experiment
    for entry in recipe.get("defaults", []) if isinstance(recipe, dict) else []:
        if isinstance(entry, str) and "/" not in entry and entry != "_self_" and entry not in seen:
            found = _recipe_setting(entry, parts, (*seen, experiment))
            if found is not None:
                return found
    return None


def check_target_keys(cfg: DictConfig) -> None:
    from hydra._internal.utils import _locate

    for path, node in _target_nodes(cfg):
        try:
            target = _locate(str(node._get_node("_target_")._value()))
        except Exception:  # noqa: BLE001 - instantiation reports a target that does not exist
            continue
        accepted = _accepted(target)
        if accepted is None:
            continue
        for key in node:
            if key in HYDRA_KEYS or key in accepted:
                continue
            name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}"
            raise ConfigError(
                f"{path}.{key} is not a setting of {path} ({name} takes no {key!r}).{_nearest(str(key), sorted(accepted))}"
                f"{_recipe_hint(path, str(key))} Settings of {path}: {', '.join(sorted(accepted))}."
            )
