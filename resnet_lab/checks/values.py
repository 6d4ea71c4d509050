"""Config values that cannot work, refused with a sentence before anything is built."""

from __future__ import annotations

import math
from typing import get_args

from omegaconf import DictConfig, OmegaConf

from resnet_lab.checks.hardware import device_count
from resnet_lab.errors import ConfigError


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive(cfg: DictConfig, key: str, *, integer: bool, allow_none: bool = False) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None and allow_none:
        return
    if not _number(value) or (integer and not isinstance(value, int)) or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive finite number"
        raise ConfigError(f"{key} must be {kind}, got {value!r}. Example: {key}={1 if integer else 0.1}.")


def in_range(cfg: DictConfig, key: str, low: float, high: float, *, high_open: bool, example: float) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return
    inside = _number(value) and low <= value and (value < high if high_open else value <= high)
    if not inside:
        interval = f"[{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{key} must be a number in {interval}, got {value!r}. Example: {key}={example}.")


def precisions() -> tuple[str, ...]:
    """Lightning's precision names (its own list, so new ones are accepted as they come)."""
    from lightning.fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

    return tuple(str(p) for p in get_args(_PRECISION_INPUT_STR) + get_args(_PRECISION_INPUT_STR_ALIAS))


def check_run_length(cfg: DictConfig) -> None:
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    if not (max_steps is not None and max_steps > 0 and max_epochs in (None, -1)):
        positive(cfg, "trainer.max_epochs", integer=True)


def check_precision(cfg: DictConfig) -> None:
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    if precision not in precisions():
        from lightning.fabric.connector import _PRECISION_INPUT_STR

        raise ConfigError(
            f"trainer.precision={precision!r} is not a precision Lightning knows. Allowed: "
            f"{', '.join(str(p) for p in get_args(_PRECISION_INPUT_STR))}."
        )


def check_batch_split(cfg: DictConfig) -> None:
    """Global batches divide evenly over the devices: training and evaluation batch alike."""
    devices = device_count(OmegaConf.select(cfg, "trainer.devices", default=1))
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1) or 1
    if devices is None:
        return
    world = devices * nodes
    for key in ("data.batch_size", "data.eval_batch_size"):
        batch = OmegaConf.select(cfg, key, default=None)
        if batch is None or batch % world == 0:
            continue
        raise ConfigError(
            f"{key}={batch} is a global batch and must divide evenly over {world} devices "
            f"(trainer.devices={devices} x trainer.num_nodes={nodes}); use a multiple of {world}, "
            f"e.g. {key}={max(world, batch // world * world)}."
        )


def check_model_fits_data(cfg: DictConfig) -> None:
    """The model's classes and input channels are the data's (the configs interpolate them)."""
    for key, what in (("num_classes", "classes"), ("in_chans", "input channels")):
        model_value = OmegaConf.select(cfg, f"model.{key}", default=None)
        data_value = OmegaConf.select(cfg, f"data.{key}", default=None)
        if model_value is None or data_value is None or model_value == data_value:
            continue
        raise ConfigError(
            f"model.{key}={model_value} but the data has {data_value} {what} (data.{key}). The "
            f"model follows the data (model.{key}: ${{data.{key}}}): leave model.{key} out, or "
            f"change data.{key} if the data really has {model_value}."
        )


def check_values(cfg: DictConfig) -> None:
    seed = OmegaConf.select(cfg, "seed", default=0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}. Example: seed=42.")
    positive(cfg, "data.batch_size", integer=True)
    positive(cfg, "data.eval_batch_size", integer=True, allow_none=True)
    positive(cfg, "optimizer.lr", integer=False)
    weight_decay = OmegaConf.select(cfg, "optimizer.weight_decay", default=0.0)
    if not _number(weight_decay) or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ConfigError(
            f"optimizer.weight_decay must be a finite number >= 0, got {weight_decay!r}. "
            "Example: optimizer.weight_decay=5e-4 (0: off)."
        )
    in_range(cfg, "module.label_smoothing", 0.0, 1.0, high_open=True, example=0.1)
    check_run_length(cfg)
    check_precision(cfg)
    check_batch_split(cfg)
    check_model_fits_data(cfg)
    monitor = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor", default=None)
    if isinstance(monitor, str) and monitor.startswith("test/"):
        raise ConfigError(
            f"the best checkpoint cannot be chosen on {monitor!r}: test metrics exist only after "
            "training. Use a validation metric (optimized_metric=val/acc_top1) or callbacks=none."
        )
