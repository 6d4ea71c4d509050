"""Checks of a composed training config that run before anything is built or written.

``hardware``: the trainer fits the machine; ``values``: values that cannot work; ``keys``:
keys that nothing reads. Each error names the key, what is allowed and an example fix.
"""

from __future__ import annotations

from omegaconf import DictConfig

from resnet_lab.checks.hardware import check_hardware, device_count
from resnet_lab.checks.keys import check_target_keys, check_top_level
from resnet_lab.checks.values import check_values


def check_config(cfg: DictConfig) -> None:
    check_top_level(cfg)
    check_hardware(cfg)
    check_values(cfg)
    check_target_keys(cfg)


__all__ = ["check_config", "check_hardware", "device_count"]
