"""resnet_lab: residual networks with PyTorch Lightning and Hydra."""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, *, ema: bool = False, trusted: bool = False):
    """A trained classifier from a run directory (its best checkpoint) or a checkpoint file:
    ``.net`` (eval mode), ``.classes`` and ``.transform`` (the run's evaluation preprocessing,
    on a PIL image or a uint8 tensor). ``ema=True``: the EMA weights. See
    ``resnet_lab.inference.load``."""
    from resnet_lab.inference import load as load_classifier

    return load_classifier(path, ema=ema, trusted=trusted)
