"""Load trained weights into a ``ResNet``: torchvision and timm state-dict files and
resnet_lab checkpoints (``model.weights=<file>``).

The ImageNet models use torchvision's state-dict names, and ResNet-D and SE-ResNet use
timm's (``conv1.0..6``, ``downsample.1``, ``se.fc1``), so neither format needs renaming;
reading and unwrapping a file is ``resnet_lab.checkpoint_files``'s job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from resnet_lab.checkpoint_files import load_checkpoint_file, load_network_state, network_state

log = logging.getLogger(__name__)

ARCHITECTURE_HINT = (
    "Check that model= and its options (block, layers, widths, stem, downsample, groups, "
    "width_per_group, se_ratio, in_chans) match the architecture it was trained with."
)


def read_state_dict(path: str | Path, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The network weights in a torchvision/timm file or a resnet_lab checkpoint."""
    source = f"model.weights={str(path)!r}"
    return network_state(load_checkpoint_file(path, what="model.weights"), source, ema=ema)


def load_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` exactly, except a classifier of another size, which keeps
    its fresh initialization (fine-tuning); any other mismatch is a ``CheckpointError``."""
    load_network_state(model, state, source, new_head_ok=True, hint=ARCHITECTURE_HINT)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a torchvision or timm state-dict file or a resnet_lab checkpoint into ``model``."""
    load_state_dict(model, read_state_dict(path), source=f"model.weights={str(path)!r}")
    log.info("loaded weights from %s", path)
