"""What the benchmark trains with: ``conf/train.yaml`` composed as ``python -m resnet_lab``
composes it (optimizer, schedule, trainer and callback settings), so the measured path is the
configured one and no value is copied out of conf/."""

from __future__ import annotations

import functools
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from resnet_lab.configs import config_dir, register_resolvers
from resnet_lab.data import RESOLVERS as DATA_RESOLVERS
from resnet_lab.run_names import RESOLVERS

# The default callbacks by what they do between training steps. Kept: those that act at
# every step (divergence: a finiteness check of the loss; preemption: a check for a signal)
# or at the start of a fit (random_state). Switched off: those that write files or log lines
# (and train.py's run record). tests/bench/test_bench.py checks that every default callback is here.
KEPT_CALLBACKS = ("random_state", "divergence", "preemption")
SWITCHED_OFF_CALLBACKS = ("model_checkpoint", "last_checkpoint", "epoch_summary")


@functools.lru_cache(maxsize=1)
def training_config() -> DictConfig:
    """The default training config on the CPU trainer, without loggers."""
    from hydra import compose, initialize_config_dir

    register_resolvers([*RESOLVERS, *DATA_RESOLVERS])
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="bench"):
        cfg = compose(config_name="train", overrides=["trainer=cpu", "logger=none", "paths.output_dir=."])
    return cfg


def optimizer_factory(batch_size: int) -> functools.partial:
    """The ``optimizer`` partial of train.py, its LR scaled to ``batch_size`` as train.py scales it."""
    cfg = training_config()
    return instantiate(cfg.optimizer, lr=float(cfg.optimizer.lr) * batch_size / cfg.lr_base_batch_size)


def scheduler_factory() -> functools.partial:
    return instantiate(training_config().scheduler)


def module_options() -> dict[str, Any]:
    """``module`` settings that shape a training step (loss, weight-decay groups)."""
    module = training_config().module
    return {"label_smoothing": module.label_smoothing, "decay_norm_and_bias": module.decay_norm_and_bias}


def trainer_options(**bench: Any) -> dict[str, Any]:
    """The configured ``lightning.Trainer`` arguments with the benchmark's own on top."""
    options = OmegaConf.to_container(training_config().trainer, resolve=True)
    options.pop("_target_")
    return {**options, **bench}


def kept_callbacks(root_dir: str) -> list[Any]:
    """The kept callbacks, built from their configs, writing (on a signal) under ``root_dir``."""
    cfg = training_config().copy()
    OmegaConf.update(cfg, "paths.output_dir", root_dir)
    return [instantiate(cfg.callbacks[name]) for name in KEPT_CALLBACKS]


def uses_grad_scaler(precision: str, device: torch.device) -> bool:
    return precision == "16-mixed" and device.type == "cuda"
