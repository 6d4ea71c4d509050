"""resnet_lab.module.ImageClassifier: the loss, the metrics and the optimizer's parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from resnet_lab.module import ImageClassifier, hard_labels, param_groups
from resnet_lab.train import build_module, build_trainer, train


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
    assert torch.allclose(module.loss(logits, labels), module.loss(logits, one_hot))
    assert torch.equal(hard_labels(one_hot), labels)


def test_label_smoothing_is_applied():
    logits = torch.tensor([[10.0, 0.0, 0.0]])
    target = torch.tensor([0])
    plain = ImageClassifier(nn.Identity(), optimizer=torch.optim.SGD, num_classes=3)
    smooth = ImageClassifier(nn.Identity(), optimizer=torch.optim.SGD, num_classes=3, label_smoothing=0.3)
    assert smooth.loss(logits, target) > plain.loss(logits, target) + 1.0
    assert math.isfinite(float(smooth.loss(logits, target)))


def test_logged_validation_metrics_equal_a_fresh_validation_of_the_same_weights(tiny_cfg):
    """The validation metrics see the validation batches only (feeding them training
    batches, or counts left over from training, would change these numbers)."""
    cfg = tiny_cfg("trainer.max_epochs=1", "logger=none", "callbacks=none", "test=false", "data.mixup_alpha=0.4")
    module, datamodule = build_module(cfg, instantiate(cfg.model)), instantiate(cfg.data)
    trainer = build_trainer(cfg, [], [])
    trainer.fit(module, datamodule=datamodule)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    fresh = build_trainer(cfg, [], []).validate(module, datamodule=datamodule, verbose=False)[0]
    assert set(logged) == {"val/loss", "val/acc_top1", "val/acc_top5"}
    for key, value in logged.items():
        assert fresh[key] == pytest.approx(value, abs=1e-6), key


def test_head_lr_multiplier_gives_the_classifier_its_own_groups_and_rate():
    from functools import partial

    from resnet_lab.models import build_model
    from resnet_lab.schedulers import cosine

    net = build_model("resnet20", num_classes=4)
    module = ImageClassifier(net, optimizer=partial(torch.optim.SGD, lr=0.1, weight_decay=5e-4),
                             num_classes=4, head_lr_multiplier=10)
    optimizer = module.configure_optimizers()
    head = {id(p) for p in net.fc.parameters()}
    rates = [(g["lr"], g["weight_decay"], {id(p) in head for p in g["params"]}) for g in optimizer.param_groups]
    assert rates == [(0.1, 5e-4, {False}), (0.1, 0.0, {False}), (1.0, 5e-4, {True}), (1.0, 0.0, {True})]
    schedule = cosine(optimizer, total_steps=10, steps_per_epoch=5, warmup_epochs=1)
    for _ in range(7):  # the ratio holds through warmup and decay
        optimizer.step()
        schedule.step()
        assert optimizer.param_groups[2]["lr"] == pytest.approx(10 * optimizer.param_groups[0]["lr"])


def test_head_lr_multiplier_must_be_positive():
    with pytest.raises(ValueError, match="head_lr_multiplier must be a number > 0"):
        ImageClassifier(nn.Identity(), optimizer=torch.optim.SGD, num_classes=4, head_lr_multiplier=0)
    with pytest.raises(ValueError, match="needs a network with get_classifier"):
        ImageClassifier(nn.Identity(), optimizer=torch.optim.SGD, num_classes=4, head_lr_multiplier=10)


def test_a_module_built_for_inference_rebuilds_its_network_and_refuses_to_train():
    from resnet_lab.models import build_model

    net = build_model("resnet20", num_classes=4)
    module = ImageClassifier(net, optimizer=torch.optim.SGD, num_classes=4)
    assert module.hparams.architecture == net.architecture
    rebuilt = ImageClassifier(**module.hparams)  # what load_from_checkpoint does
    assert [(k, v.shape) for k, v in rebuilt.net.state_dict().items()] == [
        (k, v.shape) for k, v in net.state_dict().items()]
    with pytest.raises(ValueError, match="has no optimizer .*pass optimizer="):
        rebuilt.configure_optimizers()
