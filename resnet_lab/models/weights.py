"""Load trained weights into a ``ResNet``: torchvision and timm state-dict files and
resnet_lab (Lightning) checkpoints.

The ImageNet models use torchvision's state-dict names, and ResNet-D and SE-ResNet use
timm's (``conv1.0..6``, ``downsample.1``, ``se.fc1``), so neither format needs renaming:
reading a file only unwraps its container and strips wrapper prefixes. Files are read with
``torch.load(weights_only=True)``, which refuses to run code hidden in a pickle.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from resnet_lab.errors import CheckpointError

log = logging.getLogger(__name__)

# The classifier, re-initialized when the checkpoint has another number of classes.
HEAD = ("fc.weight", "fc.bias")
# Prefixes that wrappers add to every key: DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# The LightningModule keeps the network at `net` (resnet_lab.module.ImageClassifier).
LIGHTNING_PREFIX = "net."
# How many names an error lists per kind of mismatch.
MAX_LISTED = 20


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def unwrap_state_dict(checkpoint: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The network's state dict from a loaded file, with torchvision/timm key names.

    Accepts a plain state dict (torchvision, timm), a dict holding one under
    ``state_dict`` or ``model``, and a resnet_lab Lightning checkpoint, whose ``net.``
    keys are the network's (other keys, e.g. ``ema.``, are left out).
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{source} holds a {type(checkpoint).__name__}, not a state dict. Save weights "
            "with torch.save(model.state_dict(), path)."
        )
    for container in ("state_dict", "model"):
        if isinstance(checkpoint.get(container), dict):
            checkpoint = checkpoint[container]
            break
    tensors = {key: value for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}
    if any(key.startswith(LIGHTNING_PREFIX) for key in tensors):
        tensors = {key[len(LIGHTNING_PREFIX):]: value for key, value in tensors.items()
                   if key.startswith(LIGHTNING_PREFIX)}
    if not tensors:
        raise CheckpointError(f"{source} contains no tensors; it is not a weights file.")
    return {_strip(key, WRAPPER_PREFIXES): value for key, value in tensors.items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(
            f"model.weights={str(path)!r}: no such file. Give the path of a torchvision or timm "
            "state-dict file (.pth) or a resnet_lab checkpoint (.ckpt)."
        )
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch reports a disallowed class as "Unsupported global: GLOBAL <name>"; any other
        # unpickling error means the bytes are not a pickle at all.
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe:
            raise CheckpointError(
                f"model.weights={str(path)!r} holds Python objects ({unsafe.group(1)}) that "
                "torch.load(weights_only=True) refuses to unpickle, since unpickling can run "
                "arbitrary code. Load it where you trust it and save "
                "torch.save(model.state_dict(), path) instead."
            ) from error
        raise CheckpointError(
            f"model.weights={str(path)!r} could not be read as a PyTorch file: it is not one "
            "written by torch.save, or it is truncated."
        ) from error
    except Exception as error:  # a truncated zip archive, a directory, no permission ...
        raise CheckpointError(
            f"model.weights={str(path)!r} could not be read as a PyTorch file: {error}"
        ) from error
    return unwrap_state_dict(checkpoint, source=f"model.weights={str(path)!r}")


def _shape(tensor: torch.Tensor) -> str:
    return "(" + ", ".join(str(n) for n in tensor.shape) + ")"


def _listing(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    more = [f"    ... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else []
    return [f"  {title} ({len(lines)}):", *(f"    {line}" for line in lines[:MAX_LISTED]), *more]


def load_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` exactly, except a classifier of another size.

    A classifier (``fc``) trained for another number of classes keeps the model's fresh
    initialization, for fine-tuning; any other difference in names or shapes raises a
    ``CheckpointError`` that lists every parameter concerned.
    """
    expected = model.state_dict()
    state = dict(state)
    # torchvision's original ResNet files predate BatchNorm's num_batches_tracked buffer.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    head_only = (
        set(mismatched) <= set(HEAD)
        and "fc.weight" in mismatched
        and state["fc.weight"].shape[1:] == expected["fc.weight"].shape[1:]
    )
    if mismatched and head_only and not missing and not unexpected:
        log.warning(
            "%s: its classifier has %d classes, the model %d; fc is re-initialized for fine-tuning",
            source, state["fc.weight"].shape[0], expected["fc.weight"].shape[0],
        )
        for key in HEAD:
            state[key] = expected[key]
        mismatched = []
    if missing or unexpected or mismatched:
        lines = [
            f"{source} does not fit the model; check that model= and its options (block, "
            "layers, widths, stem, downsample, groups, width_per_group, se_ratio, in_chans) "
            "match the architecture it was trained with.",
            *_listing("in the model, not in the checkpoint",
                      [f"{key} {_shape(expected[key])}" for key in missing]),
            *_listing("in the checkpoint, not in the model",
                      [f"{key} {_shape(state[key])}" for key in unexpected]),
            *_listing("shapes differ (checkpoint vs model)",
                      [f"{key} {_shape(state[key])} vs {_shape(expected[key])}" for key in mismatched]),
        ]
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a torchvision or timm state-dict file or a resnet_lab checkpoint into ``model``."""
    load_state_dict(model, read_state_dict(path), source=f"model.weights={str(path)!r}")
    log.info("loaded weights from %s", path)
