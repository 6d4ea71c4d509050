"""Checks that the ``trainer`` config fits the machine, before anything is built.

Without them a GPU config on a machine without one ends in Lightning's traceback
("No supported gpu backend found!") after the run directory and the data are set up.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from resnet_lab.errors import ConfigError

log = logging.getLogger("resnet_lab")

_CPU_CHOICES = "trainer=cpu (one process) or trainer=ddp_cpu (several processes over gloo)"


def device_count(devices) -> int | None:
    """The number of devices a Lightning ``devices`` value asks for, if known from config."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices)
    if isinstance(devices, str):
        if devices.strip().isdigit():
            return int(devices)
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
    return None  # "auto" or -1: known only once the hardware is seen


def _distributed(trainer: DictConfig) -> bool:
    devices = device_count(trainer.get("devices", 1))
    strategy = str(trainer.get("strategy", "auto"))
    return "ddp" in strategy or (devices or 1) > 1 or (trainer.get("num_nodes") or 1) > 1


def check_hardware(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    for key, example in (("num_nodes", 2), ("devices", 8)):
        if OmegaConf.is_missing(trainer, key) or trainer.get(key) is None:
            raise ConfigError(
                f"trainer.{key} must be set for this trainer config (it has no default: a "
                f"multi-node run needs the number of machines and of processes per machine). "
                f"Example: trainer.num_nodes=2 trainer.devices=8, or trainer.{key}={example}."
            )
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    precision = str(trainer.get("precision", "32-true"))
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            reason = (
                "this PyTorch is built without CUDA" if torch.version.cuda is None
                else "torch.cuda.is_available() is False: no GPU visible, or a driver problem"
            )
            raise ConfigError(
                f"trainer.accelerator={accelerator} asks for a CUDA GPU, but {reason}. "
                f"On a machine without a GPU use {_CPU_CHOICES}."
            )
        wanted = device_count(trainer.get("devices", 1))
        available = torch.cuda.device_count()
        if wanted is not None and wanted > available:
            raise ConfigError(
                f"trainer.devices={trainer.devices} asks for {wanted} GPUs on this machine, but "
                f"{available} {'is' if available == 1 else 'are'} visible. Use "
                f"trainer.devices={available}, or trainer.devices=auto for all of them."
            )
        if precision.startswith("bf16") and not torch.cuda.is_bf16_supported(including_emulation=False):
            log.warning(
                "trainer.precision=%s: this GPU has no native bfloat16 (compute capability < 8.0), "
                "so it is emulated and slow; trainer.precision=16-mixed is the fast choice here.",
                precision,
            )
    elif accelerator == "cpu" and trainer.get("sync_batchnorm") and _distributed(trainer):
        raise ConfigError(
            "trainer.sync_batchnorm=true needs GPUs: PyTorch's SyncBatchNorm does not run on the "
            "CPU. Set trainer.sync_batchnorm=false (trainer=ddp_cpu does), or train on GPUs with "
            "trainer=ddp."
        )
    if "spawn" in str(trainer.get("strategy", "")):
        raise ConfigError(
            f"trainer.strategy={trainer.strategy} starts the training processes with "
            "multiprocessing's spawn, which runs fit and test in children whose results (the "
            "run record, the best checkpoint) do not come back to this process. Use "
            "trainer.strategy=ddp (trainer=ddp on GPUs, trainer=ddp_cpu on CPUs)."
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"trainer.accelerator=mps asks for Apple's Metal backend, which this machine does not "
            f"have. Use {_CPU_CHOICES}."
        )
