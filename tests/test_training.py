"""The loop really learns, and the LightningModule's parts do what they claim."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from resnet_lab.module import ImageClassifier, param_groups
from resnet_lab.train import scaled_lr, train


def test_overfits_one_fixed_batch(tiny_cfg):
    cfg = tiny_cfg(
        "debug=overfit",
        "trainer.max_epochs=40",
        "data.batch_size=16",
        "optimizer=adamw",
        "optimizer.lr=0.03",  # per 256 images: 1.9e-3 at batch 16
        "scheduler=constant",
        "logger=none",
        "callbacks=none",
        "test=false",
        "optimized_metric=train/acc_top1",
    )
    assert train(cfg) == pytest.approx(1.0)


def test_train_returns_the_optimized_metric(tiny_cfg):
    cfg = tiny_cfg("trainer.max_epochs=2", "logger=none")
    value = train(cfg)
    assert 0.0 <= value <= 1.0
    # Not the checkpoint monitor: the value is the last logged one (here the test loss).
    cfg_loss = tiny_cfg("trainer.max_epochs=1", "logger=none", "callbacks=none", "optimized_metric=test/loss")
    assert train(cfg_loss) > 0.0


def test_lr_is_given_per_256_images_and_scaled_to_the_global_batch(tiny_cfg):
    cfg = tiny_cfg("optimizer.lr=0.1", "data.batch_size=64", "trainer.accumulate_grad_batches=2")
    assert scaled_lr(cfg) == pytest.approx(0.1 * 128 / 256)
    cfg = tiny_cfg("optimizer.lr=0.1", "data.batch_size=64", "lr_base_batch_size=null")
    assert scaled_lr(cfg) == pytest.approx(0.1)


def test_norm_and_bias_parameters_get_no_weight_decay():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 8, 8))
    decay, no_decay = param_groups(net, 5e-4, decay_norm_and_bias=False)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {4, 2}  # conv and linear weights
    assert len(no_decay["params"]) == 3  # BN weight and bias, linear bias
    (everything,) = param_groups(net, 5e-4, decay_norm_and_bias=True)
    assert len(everything["params"]) == 5


def test_configured_optimizer_uses_the_groups(tiny_cfg):
    cfg = tiny_cfg()
    module = ImageClassifier(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10)),
        optimizer=instantiate(cfg.optimizer),
        num_classes=10,
    )
    module.net(torch.zeros(1, 3, 16, 16))
    optimizer = module.configure_optimizers()
    assert [g["weight_decay"] for g in optimizer.param_groups] == [cfg.optimizer.weight_decay, 0.0]


def test_soft_targets_from_mixup_train_the_same_loss():
    module = ImageClassifier(nn.Identity(), optimizer=torch.optim.SGD, num_classes=4)
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    assert torch.allclose(module._loss(logits, labels), module._loss(logits, one_hot))
    assert torch.equal(module._hard_labels(one_hot), labels)


def test_label_smoothing_is_applied():
    logits = torch.tensor([[10.0, 0.0, 0.0]])
    target = torch.tensor([0])
    plain = ImageClassifier(nn.Identity(), optimizer=torch.optim.SGD, num_classes=3)
    smooth = ImageClassifier(nn.Identity(), optimizer=torch.optim.SGD, num_classes=3, label_smoothing=0.3)
    assert smooth._loss(logits, target) > plain._loss(logits, target) + 1.0
    assert math.isfinite(float(smooth._loss(logits, target)))


def test_each_epoch_line_shows_that_epochs_training_metrics(tiny_cfg, tmp_path, caplog):
    """Lightning aggregates an epoch's training metrics after its validation: a line written
    at validation end would show the previous epoch's train/acc_top1 (none for epoch 1)."""
    import csv
    import json
    import logging

    cfg = tiny_cfg("trainer.max_epochs=2", "logger=csv", "test=false")
    with caplog.at_level(logging.INFO, logger="resnet_lab"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")))
    for epoch, line in enumerate(lines):
        shown = dict(zip(line.split()[2::2], line.split()[3::2]))
        (row,) = [r for r in rows if r["epoch"] == str(epoch) and r["train/acc_top1"]]
        assert float(shown["train/acc_top1"]) == pytest.approx(float(row["train/acc_top1"]), abs=5e-4)
        assert float(shown["train/images_per_sec"]) == pytest.approx(float(row["train/images_per_sec"]), rel=1e-3)
    # run.json ends with the last epoch's training metrics too, not the epoch before's.
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["metrics"]["train/acc_top1"] == pytest.approx(float(row["train/acc_top1"]))
