"""MixUp and CutMix on whole training batches, with torchvision's transforms.

While either is on, every training batch leaves with soft targets of shape
``(N, num_classes)`` (one-hot for a batch that was not mixed), so the loss sees one kind of
target for the whole run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from resnet_lab.errors import ConfigError


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class BatchMixer:
    """Mixes a fraction ``prob`` of training batches with MixUp or CutMix.

    mixup_alpha, cutmix_alpha: the Beta(alpha, alpha) parameter of each; 0 turns it off.
        Zhang et al. 2018 use 0.2 to 0.4 for MixUp on ImageNet, Yun et al. 2019 use 1.0 for
        CutMix.
    prob: probability that a batch is mixed at all.
    cutmix_prob: with both on, the probability of CutMix rather than MixUp for a mixed batch.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        cutmix_prob: float = 0.5,
    ) -> None:
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not _number(value) or not 0 <= value < math.inf:
                raise ConfigError(
                    f"data.{name} is the Beta(alpha, alpha) parameter: a number >= 0 (0 = off; MixUp "
                    f"papers use 0.2 to 0.4, CutMix 1.0), got {value!r}."
                )
        for name, value in (("mix_prob", prob), ("cutmix_prob", cutmix_prob)):
            if not _number(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"data.{name} is a probability in [0, 1], got {value!r}.")
        self.num_classes = num_classes
        self.prob = prob
        choices, weights = [], []
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
            weights.append(1.0 - cutmix_prob if cutmix_alpha > 0 else 1.0)
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
            weights.append(cutmix_prob if mixup_alpha > 0 else 1.0)
        self._mix = v2.RandomChoice(choices, p=weights) if len(choices) == 2 else (choices or [None])[0]

    @property
    def active(self) -> bool:
        return self._mix is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._mix is None:
            return images, labels
        if labels.ndim == 1:
            labels = F.one_hot(labels, self.num_classes).to(images.dtype)
        if self.prob >= 1.0 or torch.rand(()) < self.prob:
            images, labels = self._mix(images, labels)
        return images, labels
