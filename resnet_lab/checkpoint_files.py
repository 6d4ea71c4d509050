"""Checkpoint and weights files: reading them safely, writing them atomically, and the
network weights inside them. Knows nothing of Lightning.

Reading unpickles with ``torch.load(weights_only=True)``, which builds only tensors and plain
containers and refuses anything that would import and call code; a file that needs more is
refused with a ``CheckpointError`` naming what it wanted, unless the caller trusts it. Every
failure (missing, truncated, not a torch file, unsafe) is a ``CheckpointError`` with a sentence.

A resnet_lab checkpoint holds the ``ImageClassifier``'s state: the network under ``net.``,
the EMA of the network (``callbacks=ema``) under ``ema_state_dict`` with the same keys, plus
Lightning's training state. torchvision and timm files are plain state dicts of the network.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_lab.errors import CheckpointError
from resnet_lab.run_dir import atomic_write

log = logging.getLogger(__name__)

# What a Lightning training checkpoint holds beyond weights; without these a file cannot
# continue a run (a weights-only file, or a torchvision/timm state dict).
TRAINING_STATE_KEYS = ("state_dict", "optimizer_states", "loops", "epoch", "global_step")
# The LightningModule keeps the network at `net` (resnet_lab.module.ImageClassifier).
NET_PREFIX = "net."
EMA_STATE_KEY = "ema_state_dict"
# Prefixes that wrappers add to every key: DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# The classifier, re-initialized when a weights file has another number of classes.
HEAD = ("fc.weight", "fc.bias")
# How many names an error lists per kind of mismatch.
MAX_LISTED = 20
TRUST_HINT = (
    "If you know where the file comes from and trust it, pass trust_checkpoint=true to "
    "load it with full unpickling."
)


def load_checkpoint_file(
    path: str | Path,
    *,
    trusted: bool = False,
    map_location: Any = "cpu",
    mmap: bool = False,
    what: str = "checkpoint",
) -> dict[str, Any]:
    """Read a checkpoint or weights file; every failure is a ``CheckpointError``.

    ``what`` names the file's role in messages (``ckpt_path``, ``model.weights``). ``mmap``
    maps the tensor data instead of reading it, for a quick look at a large file.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise CheckpointError(f"{what} {str(file)!r} does not exist.")
    if not file.is_file():
        raise CheckpointError(f"{what} {str(file)!r} is a directory, not a checkpoint file.")
    if not _looks_like_torch_save(file):
        raise CheckpointError(
            f"{what} {str(file)!r} is not a PyTorch checkpoint (torch.save writes zip archives; "
            "this file is not one)."
        )
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=not trusted, mmap=mmap)
    except pickle.UnpicklingError as error:
        wanted = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error))))
        if "Weights only load failed" not in str(error) or not wanted:
            raise CheckpointError(f"{what} {str(file)!r} {_why_unreadable(file, error)}") from None
        raise CheckpointError(
            f"{what} {str(file)!r} refused: loading it would import and call {', '.join(wanted)}, "
            "and unpickling such a file can run any code its author chose. Checkpoints and weights "
            f"files need none of that. {TRUST_HINT}"
        ) from None
    except Exception as error:  # truncated zip, unreadable ...
        raise CheckpointError(f"{what} {str(file)!r} {_why_unreadable(file, error)}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{what} {str(file)!r} holds a {type(checkpoint).__name__}, not a checkpoint or state "
            "dict. Save weights with torch.save(model.state_dict(), path)."
        )
    return checkpoint


def _looks_like_torch_save(file: Path) -> bool:
    """A zip archive (torch.save since 1.6) or a pickle (the legacy format) by its first bytes."""
    try:
        with open(file, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return True  # let torch.load report what cannot be read
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _why_unreadable(file: Path, error: BaseException) -> str:
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0].rstrip(".")
    try:
        with open(file, "rb") as handle:
            head = handle.read(4)
    except OSError as os_error:
        return f"cannot be read: {os_error.strerror}."
    if head == b"PK\x03\x04":  # torch.save writes a zip archive; this one does not open
        return (
            "is truncated or damaged: it starts like a checkpoint but cannot be read to the end "
            f"(typically a copy or save that was interrupted) ({detail})."
        )
    return "is not a PyTorch checkpoint (torch.save writes zip archives; this file is not one)."


def save_checkpoint_file(payload: Mapping[str, Any], path: str | Path) -> None:
    """``torch.save(payload, path)`` such that ``path`` is never left half written; a full
    disk or a read-only file system is a ``CheckpointError`` and the old file stays intact."""
    try:
        atomic_write(path, lambda file: torch.save(payload, file))
    except OSError as error:
        raise CheckpointError(
            f"could not save checkpoint {str(path)!r}: {error.strerror or error}. The previous "
            "checkpoint there is intact. Free space (or fix the file system) and resume the run "
            f"with resume={Path(path).parent.parent}."
        ) from None


def require_training_state(checkpoint: Mapping[str, Any], what: str) -> None:
    """Refuse a file that holds weights but not the optimizer and loop state a resume needs."""
    missing = [key for key in TRAINING_STATE_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{what} is not a training checkpoint: it lacks {', '.join(missing)}, so training "
            "cannot continue from it. To start a new run from its weights, use "
            "model.weights=<file> instead."
        )


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def network_state(checkpoint: Mapping[str, Any], source: str = "checkpoint", *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The network's state dict in a loaded file, with torchvision/timm key names.

    Accepts a plain state dict (torchvision, timm), a dict holding one under ``state_dict``
    or ``model``, and a resnet_lab checkpoint, whose ``net.`` keys are the network's (other
    keys are left out). ``ema=True`` takes the EMA weights of a resnet_lab checkpoint.
    """
    if ema:
        if not isinstance(checkpoint.get(EMA_STATE_KEY), Mapping):
            raise CheckpointError(
                f"{source} holds no EMA weights (no {EMA_STATE_KEY!r}): it was trained without "
                "callbacks=ema. Leave ema=true out to use its trained weights."
            )
        checkpoint = checkpoint[EMA_STATE_KEY]
    else:
        for container in ("state_dict", "model"):
            if isinstance(checkpoint.get(container), Mapping):
                checkpoint = checkpoint[container]
                break
    tensors = {key: value for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}
    if any(key.startswith(NET_PREFIX) for key in tensors):
        tensors = {key[len(NET_PREFIX):]: value for key, value in tensors.items() if key.startswith(NET_PREFIX)}
    if not tensors:
        raise CheckpointError(f"{source} contains no network weights; it is not a weights file.")
    return {_strip(key, WRAPPER_PREFIXES): value for key, value in tensors.items()}


def _shape(value: Any) -> str:
    return "(" + ", ".join(str(n) for n in tuple(value.shape)) + ")"


def _listing(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    more = [f"    ... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else []
    return [f"  {title} ({len(lines)}):", *(f"    {line}" for line in lines[:MAX_LISTED]), *more]


def check_state_dict_fits(
    expected: Mapping[str, Any], found: Mapping[str, Any], what: str, *, hint: str = ""
) -> None:
    """Raise a ``CheckpointError`` listing every name and shape that differs.

    ``expected`` and ``found`` map parameter names to tensors (anything with ``.shape``).
    """
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    mismatched = [key for key in expected if key in found and tuple(found[key].shape) != tuple(expected[key].shape)]
    if not (missing or unexpected or mismatched):
        return
    lines = [
        f"{what} was trained with another architecture than the configured model. {hint}".rstrip(),
        *_listing("in the model, not in the checkpoint", [f"{k} {_shape(expected[k])}" for k in missing]),
        *_listing("in the checkpoint, not in the model", [f"{k} {_shape(found[k])}" for k in unexpected]),
        *_listing("shapes differ (checkpoint vs model)",
                  [f"{k} {_shape(found[k])} vs {_shape(expected[k])}" for k in mismatched]),
    ]
    raise CheckpointError("\n".join(lines))


def load_network_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, *, new_head_ok: bool = False, hint: str = ""
) -> None:
    """Load ``state`` into ``model`` exactly; with ``new_head_ok``, a classifier (``fc``)
    trained for another number of classes keeps the model's fresh initialization (for
    fine-tuning). Any other difference raises a ``CheckpointError`` listing every name."""
    expected = model.state_dict()
    state = dict(state)
    # torchvision's original ResNet files predate BatchNorm's num_batches_tracked buffer.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    if new_head_ok and "fc.weight" in state and "fc.weight" in expected:
        theirs, ours = state["fc.weight"].shape, expected["fc.weight"].shape
        if theirs != ours and theirs[1:] == ours[1:]:
            log.warning("%s: its classifier has %d classes, the model %d; fc is re-initialized for fine-tuning",
                        source, theirs[0], ours[0])
            for key in HEAD:
                if key in expected:
                    state[key] = expected[key]
    check_state_dict_fits(expected, state, source, hint=hint)
    model.load_state_dict(state, strict=True)
