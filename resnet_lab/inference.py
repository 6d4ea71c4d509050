"""Use a trained model: ``load(path)`` gives its network, class names and preprocessing.

``path`` is a run directory (which means its best checkpoint) or a checkpoint file. A
checkpoint carries what it takes to classify new images without the run or its data: the
network's architecture, the class names and the evaluation preprocessing (saved by
``ImageClassifier``). Checkpoints written before they carried these are completed from their
run directory's config. ``ema=True`` takes the EMA weights (``callbacks=ema``).

Used by ``python -m resnet_lab.predict``, ``python -m resnet_lab.export`` and evaluate, and
by ``resnet_lab.load`` in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from resnet_lab.checkpoint_files import load_checkpoint_file, load_network_state, network_state
from resnet_lab.data.preprocessing import EvalPreprocessing, EvalTransform
from resnet_lab.errors import CheckpointError, user_error_in
from resnet_lab.models import rebuild_network
from resnet_lab.run_dir import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    checkpoint_run_dir,
    is_run_dir,
    stored_config,
)

ARCHITECTURE_HINT = "Pass the model= it was trained with."


@dataclass
class Classifier:
    """A trained network ready for new images.

    net: the network in eval mode (images (N, C, H, W) -> logits (N, len(classes))).
    classes: the class names, in the order of the logits.
    preprocessing: what the data module did to its test images (``EvalPreprocessing``).
    transform: that preprocessing as a callable on one PIL image or uint8 tensor, like
        torchvision's ``weights.transforms()``.
    checkpoint: the file the weights came from; ema: whether they are its EMA weights.
    """

    net: nn.Module
    classes: list[str]
    preprocessing: EvalPreprocessing
    checkpoint: Path
    ema: bool = False
    transform: EvalTransform = field(init=False)

    def __post_init__(self) -> None:
        self.transform = self.preprocessing.transform()

    @property
    def meta(self) -> dict[str, Any]:
        """As torchvision's ``weights.meta``: ``categories``, and the preprocessing."""
        return {"categories": list(self.classes), "preprocessing": self.preprocessing.to_dict(),
                "checkpoint": str(self.checkpoint), "ema": self.ema}

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes of a batch of preprocessed images, on the network's device."""
        device = next(self.net.parameters()).device
        return self.net(images.to(device)).float().softmax(dim=1)


def resolve_checkpoint(path: str | Path, what: str = "ckpt_path") -> Path:
    """The checkpoint file ``path`` names: itself, or a run directory's best checkpoint."""
    given = Path(path).expanduser()
    if not given.is_dir():
        return given  # load_checkpoint_file names a missing or unreadable file
    if not is_run_dir(given):
        raise CheckpointError(
            f"{what} {str(given)!r} is a directory but not a run directory (no run.json or "
            ".hydra/config.yaml): pass a run directory or a checkpoint file (.ckpt)."
        )
    best = given / CHECKPOINT_DIR / BEST_CHECKPOINT
    if best.is_file():
        return best
    last = given / CHECKPOINT_DIR / LAST_CHECKPOINT
    hint = f"pass its last checkpoint, {last}, to use that" if last.is_file() else "it saved no checkpoint"
    raise CheckpointError(f"run {str(given)!r} has no best checkpoint ({best}); {hint}.")


def saved_metadata(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """``architecture``, ``classes`` and ``preprocessing`` as the checkpoint holds them (None
    for each that an older checkpoint lacks)."""
    hparams = checkpoint.get("hyper_parameters")
    hparams = hparams if isinstance(hparams, Mapping) else {}
    return {key: hparams.get(key) for key in ("architecture", "classes", "preprocessing")}


def network_from_config(
    model_cfg: DictConfig, checkpoint: Mapping[str, Any], what: str, *, ema: bool = False
) -> nn.Module:
    """The model config's network with the checkpoint's weights (``model.weights`` and the
    freezing options ignored: the checkpoint's weights replace them)."""
    from hydra.utils import instantiate

    # Freezing concerns training only, and needs weights to freeze.
    fine_tuning = {"weights": None, "freeze": [], "freeze_bn_stats": False}
    net = instantiate(model_cfg, **{key: value for key, value in fine_tuning.items() if key in model_cfg})
    load_network_state(net, network_state(checkpoint, what, ema=ema), what, hint=ARCHITECTURE_HINT)
    return net


def _run_config_parts(run_dir: Path, checkpoint: Mapping[str, Any], what: str, ema: bool, saved: dict[str, Any]):
    """For a checkpoint that predates saved metadata: the network, classes and preprocessing
    from the run's config (its data module is built, not set up: no data is read)."""
    from hydra.utils import instantiate

    from resnet_lab.configs import register_resolvers
    from resnet_lab.data import RESOLVERS as DATA_RESOLVERS
    from resnet_lab.run_names import RESOLVERS

    register_resolvers([*RESOLVERS, *DATA_RESOLVERS])
    cfg = OmegaConf.create(stored_config(run_dir))
    try:
        net = (network_from_config(cfg.model, checkpoint, what, ema=ema) if saved["architecture"] is None
               else None)
        datamodule = instantiate(cfg.data) if saved["classes"] is None or saved["preprocessing"] is None else None
    except Exception as error:
        user_error = user_error_in(error)
        if user_error is None:
            raise
        raise type(user_error)(
            f"{what} predates checkpoints that carry their classes and preprocessing, and its run's "
            f"config ({run_dir}) does not build: {user_error}"
        ) from None
    classes = saved["classes"] if saved["classes"] is not None else list(datamodule.classes)
    preprocessing = saved["preprocessing"]
    if preprocessing is None:
        preprocessing = datamodule.eval_preprocessing().to_dict()
    return net, classes, preprocessing


def load(path: str | Path, *, ema: bool = False, trusted: bool = False, what: str = "checkpoint") -> Classifier:
    """Load a trained classifier from a run directory or a checkpoint file (on the CPU).

    ema: the EMA weights (a run trained with ``callbacks=ema``) instead of the trained ones.
    trusted: read the file with full unpickling; only for files whose origin you trust.
    Raises ``CheckpointError`` (a ``UserError``) with a sentence for anything unusable.
    """
    file = resolve_checkpoint(path, what)
    checkpoint = load_checkpoint_file(file, trusted=trusted, what=what)
    source = f"{what} {str(file)!r}"
    if not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(
            f"{source} holds network weights only (a torchvision or timm file?), without classes or "
            "preprocessing: it is not a resnet_lab checkpoint. Build the network with "
            "resnet_lab.models.build_model(name, num_classes=..., weights=<file>), or fine-tune from it "
            "with model.weights=<file>."
        )
    saved = saved_metadata(checkpoint)
    net = None
    classes, preprocessing = saved["classes"], saved["preprocessing"]
    if None in saved.values():
        run_dir = checkpoint_run_dir(file)
        if run_dir is None:
            missing = ", ".join(key for key, value in saved.items() if value is None)
            raise CheckpointError(
                f"{source} does not hold its {missing} (it was saved by an older resnet_lab) and is not "
                "inside its run directory, whose config would supply them: load it from "
                "<run>/checkpoints/, or pass the run directory."
            )
        net, classes, preprocessing = _run_config_parts(run_dir, checkpoint, source, ema, saved)
    if net is None:
        net = rebuild_network(saved["architecture"])
        load_network_state(net, network_state(checkpoint, source, ema=ema), source, hint=ARCHITECTURE_HINT)
    try:
        preprocessing = EvalPreprocessing.from_dict(preprocessing)
    except ValueError as error:
        raise CheckpointError(f"{source} holds a preprocessing that cannot be used ({error}).") from None
    classes = [str(name) for name in classes]
    num_outputs = getattr(getattr(net, "fc", None), "out_features", len(classes))
    if len(classes) != num_outputs:
        raise CheckpointError(f"{source} names {len(classes)} classes for a network with {num_outputs} outputs.")
    return Classifier(net=net.eval(), classes=classes, preprocessing=preprocessing, checkpoint=file, ema=ema)


def top_classes(probabilities: torch.Tensor, classes: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable (class name, probability) pairs of each row, best first."""
    values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [[(classes[i], float(v)) for v, i in zip(row_values, row_indices)]
            for row_values, row_indices in zip(values.tolist(), indices.tolist())]


__all__ = ["Classifier", "load", "network_from_config", "resolve_checkpoint", "top_classes"]
