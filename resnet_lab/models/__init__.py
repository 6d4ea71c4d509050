"""Residual networks: one parametrized ``ResNet``, a registry of named variants, weights.

``build_model(name, num_classes=..., in_chans=..., weights=..., **options)`` is what the
configs in ``conf/model/`` instantiate. Nothing here knows of Lightning.
"""

from resnet_lab.models.blocks import (
    BLOCKS,
    BasicBlock,
    BlockOptions,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
)
from resnet_lab.models.registry import (
    MODELS,
    OPTIONS,
    build_model,
    list_models,
    model_arguments,
    rebuild_network,
)
from resnet_lab.models.resnet import ResNet
from resnet_lab.models.weights import load_state_dict, load_weights, read_state_dict

__all__ = [
    "BLOCKS",
    "MODELS",
    "OPTIONS",
    "BasicBlock",
    "BlockOptions",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "build_model",
    "list_models",
    "load_state_dict",
    "load_weights",
    "model_arguments",
    "read_state_dict",
    "rebuild_network",
]
