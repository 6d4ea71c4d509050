"""module.class_weights: inverse-frequency weights of the training loss from the data's counts."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from resnet_lab.data import SyntheticDataModule
from resnet_lab.errors import ConfigError
from resnet_lab.models import build_model
from resnet_lab.module import ImageClassifier, balanced_class_weights


class Imbalanced(SyntheticDataModule):
    """Synthetic images whose training labels repeat ``pattern`` (3 : 2 : 1 by default), so
    weighted and plain losses differ."""

    pattern = (0, 0, 0, 1, 1, 2)

    def build_sets(self) -> None:
        super().build_sets()
        images, labels = self.train_set.tensors
        labels = torch.tensor(self.pattern * (len(labels) // len(self.pattern)))
        self.train_set = TensorDataset(images[: len(labels)], labels)


def classifier(**options) -> ImageClassifier:
    torch.manual_seed(0)
    net = build_model(name="resnet20", num_classes=3, in_chans=3)
    # lr=0: the weights stay put, so the loss can be recomputed after the step
    return ImageClassifier(net, partial(torch.optim.SGD, lr=0.0), num_classes=3, **options)


class CheckLoss(L.Callback):
    def __init__(self):
        self.checked = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        images, labels = batch
        with torch.no_grad():
            logits = pl_module(images).float()
        weight = pl_module.loss_weights
        assert torch.allclose(outputs["loss"], F.cross_entropy(logits, labels, weight=weight), atol=1e-6)
        assert not torch.allclose(outputs["loss"], F.cross_entropy(logits, labels), atol=1e-4)
        self.checked += 1


def test_balanced_weights_are_inverse_frequencies():
    assert balanced_class_weights([30, 10]).tolist() == pytest.approx([40 / 60, 40 / 20])
    with pytest.raises(ConfigError, match="class 1 has no training images"):
        balanced_class_weights([5, 0, 3])


def fit(module, data, callbacks=()) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=list(callbacks))
    trainer.fit(module, datamodule=data)
    return trainer


@pytest.mark.parametrize("weights", ["balanced", [1.0, 3.0, 0.5]])
def test_the_training_loss_is_weighted(weights):
    data = Imbalanced(num_classes=3, image_size=8, train_size=60, batch_size=12)
    module, callback = classifier(class_weights=weights), CheckLoss()
    fit(module, data, [callback])
    assert callback.checked == 2
    expected = balanced_class_weights([30, 20, 10]) if weights == "balanced" else torch.tensor(weights)
    assert torch.allclose(module.loss_weights, expected)
    assert "loss_weights" not in module.state_dict()  # checkpoints load whatever the weights were


def test_balanced_needs_every_class_in_the_training_set():
    data = Imbalanced(num_classes=3, image_size=8, train_size=60, batch_size=12)
    data.pattern = (0, 0, 1)
    with pytest.raises(ConfigError, match="class 2 has no training images"):
        fit(classifier(class_weights="balanced"), data)


@pytest.mark.parametrize("weights", ["inverse", [1.0, 2.0], [1.0, -1.0, 1.0], [1.0, float("nan"), 1.0]])
def test_bad_weights_are_config_errors(weights):
    with pytest.raises(ConfigError, match=r"module.class_weights must be balanced, null or a list of 3 weights >= 0"):
        classifier(class_weights=weights)
