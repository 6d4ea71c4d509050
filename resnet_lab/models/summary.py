"""Parameter and FLOP counts: a table of the named models and a layer-by-layer summary.

Models are built on the meta device, so counting even ResNet-1202 or Wide ResNet-101-2
allocates no memory and takes no compute. FLOPs are torch's ``FlopCounterMode`` counts
(convolutions and matrix products, 2 FLOPs per multiply-add); papers and torchvision's
docs quote multiply-adds, half as many, so both are shown.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_lab.models.registry import MODELS, build_model


def published_setting(name: str) -> tuple[int, int]:
    """(classes, image size) of the data a named model was published for: CIFAR-10 for
    the 3x3-stem models, ImageNet for the others."""
    return (10, 32) if MODELS[name]["stem"] == "cifar" else (1000, 224)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_on_meta(name: str, **kwargs: Any) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **kwargs)


def count_flops(model: nn.Module, image_size: int, in_chans: int = 3) -> FlopCounterMode:
    """Run one image through ``model`` on the meta device, counting FLOPs per module."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False, depth=None)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, in_chans, image_size, image_size, device=device))
    return counter


def model_table(
    names: list[str] | None = None,
    image_size: int | None = None,
    num_classes: int | None = None,
    in_chans: int = 3,
) -> str:
    """A Markdown table: parameters, multiply-adds and FLOPs of each named model for one
    image; image size and classes default to the model's published setting."""
    rows = [
        "| model | input | classes | parameters | GMACs | GFLOPs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names or list(MODELS):
        classes, size = published_setting(name)
        classes, size = num_classes or classes, image_size or size
        model = build_on_meta(name, num_classes=classes, in_chans=in_chans)
        flops = count_flops(model, size, in_chans).get_total_flops()
        rows.append(
            f"| {name} | {size} | {classes} | {count_parameters(model):,} "
            f"| {flops / 2e9:.3f} | {flops / 1e9:.3f} |"
        )
    return "\n".join(rows)


def layer_summary(
    name: str,
    image_size: int | None = None,
    num_classes: int | None = None,
    in_chans: int = 3,
    depth: int = 2,
) -> str:
    """Each module down to ``depth`` levels (1: stem parts and stages; 2: blocks; ...):
    output shape, parameters and FLOPs for one image."""
    classes, size = published_setting(name)
    classes, size = num_classes or classes, image_size or size
    model = build_on_meta(name, num_classes=classes, in_chans=in_chans)
    shapes: dict[str, tuple[int, ...]] = {}
    modules = {key: module for key, module in model.named_modules()
               if key and key.count(".") < depth}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, key=key: shapes.__setitem__(key, tuple(out.shape)))
        for key, module in modules.items()
    ]
    counts = count_flops(model, size, in_chans)
    for hook in hooks:
        hook.remove()
    per_module = counts.get_flop_counts()
    root = type(model).__name__
    rows = [
        f"{name}: {count_parameters(model):,} parameters, "
        f"{counts.get_total_flops() / 1e9:.3f} GFLOPs for one {in_chans}x{size}x{size} image, "
        f"{classes} classes",
        "",
        "| layer | type | output | parameters | GFLOPs |",
        "|---|---|---|---:|---:|",
    ]
    for key, module in modules.items():
        if isinstance(module, nn.Identity):
            continue
        flops = sum(per_module.get(f"{root}.{key}", {}).values())
        shape = "x".join(str(n) for n in shapes.get(key, ())[1:]) or "-"
        rows.append(
            f"| {key} | {type(module).__name__} | {shape} "
            f"| {count_parameters(module):,} | {flops / 1e9:.3f} |"
        )
    return "\n".join(rows)
