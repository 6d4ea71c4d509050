"""Named models: each is a dict of ``ResNet`` arguments, and ``build_model`` builds one.

Every name here has a config ``conf/model/<name>.yaml``; ``custom`` builds from fields alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from resnet_lab.errors import CheckpointError, ConfigError
from resnet_lab.models.resnet import ResNet
from resnet_lab.models.weights import load_weights

# ImageNet family: 7x7 stride-2 stem + max-pool, four stages (He et al. 2015, Table 1).
_IMAGENET = {"stem": "imagenet", "stem_width": 64, "widths": (64, 128, 256, 512),
             "downsample": "projection"}
_R50 = {**_IMAGENET, "block": "bottleneck", "layers": (3, 4, 6, 3)}
_R101 = {**_IMAGENET, "block": "bottleneck", "layers": (3, 4, 23, 3)}
# CIFAR family: 3x3 stem, widths 16-32-64, 6n+2 layers, option-A shortcuts (He et al. 2015,
# section 4.2).
_CIFAR = {"stem": "cifar", "stem_width": 16, "widths": (16, 32, 64), "block": "basic",
          "downsample": "zeropad"}
# Pre-activation (He et al. 2016) and wide (Zagoruyko and Komodakis 2016) CIFAR nets: a
# 16-channel 3x3 stem and 1x1 projections where the shape changes.
_PREACT_CIFAR = {"stem": "cifar", "stem_width": 16, "downsample": "projection"}


def _cifar(depth: int) -> dict[str, Any]:
    return {**_CIFAR, "layers": ((depth - 2) // 6,) * 3}


def _wrn(depth: int, k: int) -> dict[str, Any]:
    """WRN-depth-k: (depth - 4) / 6 pre-activation basic blocks per stage, widths 16k-32k-64k."""
    return {**_PREACT_CIFAR, "block": "preact_basic", "layers": ((depth - 4) // 6,) * 3,
            "widths": (16 * k, 32 * k, 64 * k)}


MODELS: dict[str, dict[str, Any]] = {
    "resnet18": {**_IMAGENET, "block": "basic", "layers": (2, 2, 2, 2)},
    "resnet34": {**_IMAGENET, "block": "basic", "layers": (3, 4, 6, 3)},
    "resnet50": _R50,
    "resnet101": _R101,
    "resnet152": {**_IMAGENET, "block": "bottleneck", "layers": (3, 8, 36, 3)},
    "resnext50_32x4d": {**_R50, "groups": 32, "width_per_group": 4},
    "resnext101_32x8d": {**_R101, "groups": 32, "width_per_group": 8},
    "wide_resnet50_2": {**_R50, "width_per_group": 128},
    "wide_resnet101_2": {**_R101, "width_per_group": 128},
    # ResNet-D: deep stem and average-pool shortcuts (He et al. 2019, "Bag of Tricks").
    "resnet50d": {**_R50, "stem": "deep", "downsample": "avgpool"},
    # Squeeze-and-excitation with reduction 16 (Hu et al. 2018).
    "se_resnet50": {**_R50, "se_ratio": 1 / 16},
    "resnet20": _cifar(20),
    "resnet32": _cifar(32),
    "resnet44": _cifar(44),
    "resnet56": _cifar(56),
    "resnet110": _cifar(110),
    "resnet1202": _cifar(1202),
    # The plain counterparts of the degradation experiment (He et al. 2015, Fig. 6).
    "plain20": {**_cifar(20), "shortcut": False, "downsample": "none"},
    "plain56": {**_cifar(56), "shortcut": False, "downsample": "none"},
    "plain110": {**_cifar(110), "shortcut": False, "downsample": "none"},
    "preact_resnet110": {**_PREACT_CIFAR, "block": "preact_basic", "layers": (18, 18, 18),
                         "widths": (16, 32, 64)},
    "preact_resnet164": {**_PREACT_CIFAR, "block": "preact_bottleneck", "layers": (18, 18, 18),
                         "widths": (16, 32, 64)},
    "wrn_28_10": _wrn(28, 10),
    "wrn_40_4": _wrn(40, 4),
    "wrn_16_8": _wrn(16, 8),
    # The ImageNet architectures with a 3x3 stride-1 stem and no max-pool, as most CIFAR
    # code trains them (e.g. kuangliu/pytorch-cifar).
    "resnet18_cifar": {**_IMAGENET, "block": "basic", "layers": (2, 2, 2, 2), "stem": "cifar"},
    "resnet34_cifar": {**_IMAGENET, "block": "basic", "layers": (3, 4, 6, 3), "stem": "cifar"},
    "resnet50_cifar": {**_R50, "stem": "cifar"},
}

# Every argument of ResNet a config may set, besides num_classes and in_chans.
OPTIONS: tuple[str, ...] = tuple(
    name for name in inspect.signature(ResNet).parameters if name not in ("num_classes", "in_chans")
)


def list_models() -> list[str]:
    return list(MODELS)


def model_arguments(name: str | None = None, **options: Any) -> dict[str, Any]:
    """The ResNet arguments of ``name`` with ``options`` over them (None keeps the entry's)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"{', '.join(f'model.{key}' for key in unknown)} is not a model option. "
            f"Options: {', '.join(OPTIONS)}."
        )
    if name is not None and name not in MODELS:
        raise ConfigError(
            f"model.name={name!r} is not a named model. Named models: {', '.join(MODELS)}; "
            "or name=null (model=custom) to build from the fields alone."
        )
    arguments = {**MODELS.get(name, {}), **{k: v for k, v in options.items() if v is not None}}
    missing = [key for key in ("block", "layers") if key not in arguments]
    if missing:
        raise ConfigError(
            f"model.name is null, so model.{' and model.'.join(missing)} must be given "
            "(e.g. model=custom model.block=basic model.layers=[2,2,2,2])."
        )
    return arguments


def build_model(
    name: str | None = None,
    *,
    num_classes: int,
    in_chans: int = 3,
    weights: str | None = None,
    freeze: Sequence[str] = (),
    freeze_bn_stats: bool = False,
    **options: Any,
) -> nn.Module:
    """Build the named model (or one from ``options`` alone when ``name`` is None).

    Args:
        name: a key of ``MODELS``.
        num_classes: classifier outputs.
        in_chans: input channels.
        weights: a torchvision or timm state-dict file or a resnet_lab checkpoint to load;
            a classifier of another size is re-initialized for fine-tuning.
        freeze: stages that do not train (``stem``, ``layer1``, ...; see ``ResNet.freeze``).
        freeze_bn_stats: every BatchNorm keeps its loaded running statistics in training.
        options: ``ResNet`` arguments over the named entry's; None keeps the entry's value.
    """
    model = ResNet(**model_arguments(name, **options), num_classes=num_classes, in_chans=in_chans)
    if weights is not None:
        load_weights(model, weights)
    if isinstance(freeze, str) or not all(isinstance(name, str) for name in freeze):
        raise ConfigError(f"model.freeze must be a list of stage names, e.g. [stem,layer1]; got {freeze!r}.")
    if not isinstance(freeze_bn_stats, bool):
        raise ConfigError(f"model.freeze_bn_stats must be true or false, got {freeze_bn_stats!r}.")
    if freeze or freeze_bn_stats:
        if weights is None:
            what = f"model.freeze={list(freeze)}" if freeze else "model.freeze_bn_stats=true"
            raise ConfigError(
                f"{what} keeps weights as loaded, but model.weights is null: they would stay at their "
                "random initialization. Pass model.weights=<a torchvision or timm file, or a checkpoint> "
                "to fine-tune from (experiment=finetune_folder needs one)."
            )
        model.freeze(list(freeze), bn_stats=freeze_bn_stats)
    return model


def rebuild_network(architecture: Mapping[str, Any]) -> ResNet:
    """The ``ResNet`` that ``architecture`` (a ``ResNet.architecture``, as checkpoints keep it)
    describes, freshly initialized; a description that does not build is a ``CheckpointError``."""
    accepted = set(inspect.signature(ResNet).parameters)
    unknown = sorted(set(architecture) - accepted) if isinstance(architecture, Mapping) else ["(not a mapping)"]
    if unknown:
        raise CheckpointError(
            f"the checkpoint's architecture has {', '.join(map(str, unknown))}, which ResNet does not take: "
            "it was saved by another version of resnet_lab, or edited."
        )
    try:
        return ResNet(**architecture)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"the checkpoint's architecture does not build: {error}") from None
