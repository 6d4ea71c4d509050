"""A batch in which no image decodes is skipped, in training, validation, EMA and evaluate."""

from __future__ import annotations

from functools import partial

import lightning as L
import torch

from resnet_lab.callbacks.ema import EMA
from resnet_lab.data import ImageNetSubsetDataModule
from resnet_lab.evaluate import evaluate_network
from resnet_lab.models import build_model
from resnet_lab.module import ImageClassifier
from tests.helpers.fakes import write_image_tree

CLASSES = ("n01440764", "n02102040")


def break_images(folder) -> None:
    for path in folder.iterdir():
        path.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")


def classifier() -> ImageClassifier:
    torch.manual_seed(0)
    net = build_model(name="resnet20", num_classes=2, in_chans=3)
    return ImageClassifier(net, partial(torch.optim.SGD, lr=0.1, momentum=0.9), num_classes=2)


def fit(module, data, **options) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, **options,
    )
    trainer.fit(module, datamodule=data)
    return trainer


def test_training_batches_with_no_readable_image_are_skipped(tmp_path):
    root = write_image_tree(tmp_path, CLASSES, train_per_class=2, val_per_class=2, size=(20, 20))
    for wnid in CLASSES:
        break_images(root / "train" / wnid)
    # MixUp on: the empty batch must not reach the mixer's reshapes either.
    data = ImageNetSubsetDataModule(root=root, subset=None, num_classes=2, image_size=16, batch_size=2,
                                    mixup_alpha=0.4)
    module = classifier()
    before = {name: value.clone() for name, value in module.state_dict().items()}
    trainer = fit(module, data)
    assert data.skipped_samples == 4
    assert all(torch.equal(before[name], value) for name, value in module.state_dict().items())  # no step
    assert "val/acc_top1" in trainer.callback_metrics  # the epoch went on to validation


def test_evaluation_batches_with_no_readable_image_are_skipped(tmp_path):
    root = write_image_tree(tmp_path, CLASSES, train_per_class=3, val_per_class=2, size=(20, 20))
    break_images(root / "val" / CLASSES[0])  # the first validation batch: nothing decodes
    data = ImageNetSubsetDataModule(root=root, subset=None, num_classes=2, image_size=16, batch_size=2,
                                    eval_batch_size=2)
    module = classifier()
    trainer = fit(module, data, callbacks=[EMA(decay=0.5, update_starting_at_step=0)])
    assert data.skipped_samples == 2
    assert {"val/acc_top1", "val/loss", "val/acc_top1_ema"} <= set(trainer.callback_metrics)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    result = evaluate_network(module.net, data.val_dataloader(), data, 2, torch.device("cpu"), None)
    assert result["samples"] == 2 and data.skipped_samples == 4
