"""Which checkpoint a resumed run continues from, and whether it fits the configured model."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from resnet_lab.checkpoint_files import (
    check_state_dict_fits,
    load_checkpoint_file,
    network_state,
    require_training_state,
)
from resnet_lab.errors import CheckpointError, UserError
from resnet_lab.run_dir import CHECKPOINT_DIR, LAST_CHECKPOINT

log = logging.getLogger("resnet_lab")

Note = tuple[int, str]  # (logging level, message)


@dataclass(frozen=True)
class CheckpointChoice:
    path: Path | None
    notes: tuple[Note, ...] = ()


def _candidates(run_dir: Path) -> list[Path]:
    candidates = sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt"))
    # Lightning's own SLURM handler saves hpc_ckpt_<n>.ckpt in the run directory.
    candidates += sorted(run_dir.glob("hpc_ckpt_*.ckpt"))
    return [path for path in candidates if path.is_file()]


def read_training_checkpoint(path: Path, *, trusted: bool, what: str) -> dict[str, Any]:
    """Load (tensors memory-mapped) and check that ``path`` can continue a run."""
    checkpoint = load_checkpoint_file(path, trusted=trusted, mmap=True, what=what)
    require_training_state(checkpoint, f"{what} {str(path)!r}")
    return checkpoint


def newest_checkpoint(run_dir: Path, *, trusted: bool) -> CheckpointChoice:
    """The readable training checkpoint of ``run_dir`` with the most optimizer steps.

    Ties (``best.ckpt`` and ``last.ckpt`` written at the same step) go to ``last.ckpt``,
    then to the newer file. Unreadable files are passed over, with a note saying so; if
    every checkpoint is unreadable that is an error, never a silent restart.
    """
    found, problems = [], []
    for path in _candidates(run_dir):
        try:
            checkpoint = read_training_checkpoint(path, trusted=trusted, what="checkpoint")
        except CheckpointError as error:
            problems.append((path, str(error)))
            continue
        step = int(checkpoint.get("global_step", -1))
        del checkpoint
        found.append(((step, path.name == LAST_CHECKPOINT, path.stat().st_mtime), path))
    if not found:
        if problems:
            listing = "\n".join(f"  {path.name}: {message}" for path, message in problems)
            raise CheckpointError(
                f"run {str(run_dir)!r} has checkpoints but none can be read:\n{listing}\n"
                f"Nothing was changed. Restore a good copy into {run_dir / CHECKPOINT_DIR}, or start a new run."
            )
        return CheckpointChoice(None, ((logging.WARNING, (
            f"run {run_dir} has no checkpoint yet: it starts over from step 0 in the same directory")),))
    (step, _, _), path = max(found, key=lambda item: item[0])
    notes: list[Note] = [(logging.WARNING, f"passed over {broken.name}: {message}") for broken, message in problems]
    if problems:
        notes.append((logging.WARNING, f"resuming from {path} (step {step}), the newest checkpoint that can be read"))
    else:
        notes.append((logging.INFO, f"resuming from {path} (step {step})"))
    return CheckpointChoice(path, tuple(notes))


def check_checkpoint_fits_model(checkpoint: Mapping[str, Any], task: Mapping[str, Any], what: str) -> None:
    """Compare the checkpoint's network with the configured model, names and shapes.

    The model is built on PyTorch's ``meta`` device: no memory, no initialization cost.
    """
    import torch
    from hydra.utils import instantiate

    cfg = OmegaConf.create(dict(task))
    model_cfg = cfg.get("model")
    if model_cfg is None or "_target_" not in model_cfg:
        return
    overrides = {"weights": None} if "weights" in model_cfg else {}
    try:
        with torch.device("meta"):
            net = instantiate(model_cfg, **overrides)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - the job itself will report a broken model config
        log.debug("could not build the model to check %s: %s", what, error)
        return
    check_state_dict_fits(
        net.state_dict(), network_state(checkpoint, what), what,
        hint="Use the model= and model options the checkpoint was trained with.",
    )
