"""The grad_norms callback: stage-wise gradient norms equal a hand computation, stay on the
device between log windows, and reach metrics.csv from `callbacks=grad_norms`."""

from __future__ import annotations

import contextlib
import csv
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from resnet_lab.callbacks.grad_norms import GradNorms, stage_of
from resnet_lab.errors import ConfigError
from resnet_lab.models import build_model
from resnet_lab.train import train
from tests.helpers import TINY, compose_config


class RecordingLogger:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.rows.append((step, dict(metrics)))


def _tiny_setup():
    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=3, in_chans=1, layers=[1, 1, 1], widths=[4, 8, 8],
                      stem_width=4)
    module = SimpleNamespace(net=net)
    logger = RecordingLogger()
    trainer = SimpleNamespace(global_step=0, current_epoch=0, is_global_zero=True, loggers=[logger])
    return net, module, trainer, logger


def _backward(net: nn.Module, seed: int, device: str = "cpu") -> None:
    generator = torch.Generator().manual_seed(seed)
    net.zero_grad()
    images = torch.randn(4, 1, 16, 16, generator=generator).to(device)
    targets = torch.randint(0, 3, (4,), generator=generator).to(device)
    nn.functional.cross_entropy(net(images), targets).backward()


def _by_hand(net: nn.Module) -> dict[str, float]:
    squares: dict[str, float] = {}
    for name, parameter in net.named_parameters():
        top = name.split(".")[0]
        stage = "stem" if top in ("conv1", "bn1") else top
        squares[stage] = squares.get(stage, 0.0) + float((parameter.grad.double() ** 2).sum())
    norms = {stage: math.sqrt(value) for stage, value in squares.items()}
    norms["total"] = math.sqrt(sum(squares.values()))
    return norms


def test_stages_are_the_stem_the_residual_stages_and_the_classifier():
    assert stage_of("conv1.weight") == stage_of("bn1.bias") == "stem"
    assert stage_of("conv1.3.weight") == "stem"  # the deep stem of ResNet-D
    assert stage_of("layer2.0.downsample.0.weight") == "layer2"
    assert stage_of("fc.bias") == "fc"


def test_norms_are_the_mean_over_the_window_of_each_stages_l2_norm():
    net, module, trainer, logger = _tiny_setup()
    callback = GradNorms(log_every_n_steps=2)
    callback.on_fit_start(trainer, module)
    expected = []
    for step in range(4):
        _backward(net, seed=step)
        expected.append(_by_hand(net))
        trainer.global_step = step
        callback.on_before_optimizer_step(trainer, module, optimizer=None)
    assert [step for step, _ in logger.rows] == [1, 3]  # Lightning's row steps for steps 2 and 4
    for (_, row), pair in zip(logger.rows, (expected[0:2], expected[2:4])):
        assert set(row) == {"grad_norm/stem", "grad_norm/layer1", "grad_norm/layer2", "grad_norm/layer3",
                            "grad_norm/fc", "grad_norm/total", "epoch"}
        for stage in pair[0]:
            mean = (pair[0][stage] + pair[1][stage]) / 2
            assert row[f"grad_norm/{stage}"] == pytest.approx(mean, rel=1e-5), stage
    assert expected[0]["layer1"] != pytest.approx(expected[1]["layer1"])  # the mean is a real mean


def test_once_per_epoch_without_a_step_window():
    net, module, trainer, logger = _tiny_setup()
    callback = GradNorms(log_every_n_steps=None)
    callback.on_fit_start(trainer, module)
    norms = []
    for step in range(3):
        _backward(net, seed=10 + step)
        norms.append(_by_hand(net)["total"])
        trainer.global_step = step
        callback.on_before_optimizer_step(trainer, module, optimizer=None)
    assert logger.rows == []
    trainer.global_step, trainer.current_epoch = 3, 0
    callback.on_train_epoch_end(trainer, module)
    ((step, row),) = logger.rows
    assert step == 2 and row["epoch"] == 0
    assert row["grad_norm/total"] == pytest.approx(sum(norms) / 3, rel=1e-5)


def test_a_stage_without_gradients_counts_zero_and_a_step_without_any_is_skipped():
    net, module, trainer, logger = _tiny_setup()
    callback = GradNorms(log_every_n_steps=1)
    callback.on_fit_start(trainer, module)
    callback.on_before_optimizer_step(trainer, module, optimizer=None)  # no backward yet
    assert logger.rows == []
    _backward(net, seed=3)
    net.fc.weight.grad = net.fc.bias.grad = None
    callback.on_before_optimizer_step(trainer, module, optimizer=None)
    ((_, row),) = logger.rows
    assert row["grad_norm/fc"] == 0.0 and row["grad_norm/layer3"] > 0


@contextlib.contextmanager
def _no_reading_back(monkeypatch):
    """Every way a tensor's value reaches Python raises: on a GPU each is a host-device sync."""
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read back to the host")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"):
            patch.setattr(torch.Tensor, name, refuse)
        yield


def test_no_value_is_read_back_between_log_windows(monkeypatch):
    net, module, trainer, logger = _tiny_setup()
    callback = GradNorms(log_every_n_steps=5)
    callback.on_fit_start(trainer, module)
    with _no_reading_back(monkeypatch):
        with pytest.raises(AssertionError, match="read back"):  # the guard does guard
            float(torch.ones(()))
    for step in range(5):
        _backward(net, seed=step)
        trainer.global_step = step
        if step < 4:
            with _no_reading_back(monkeypatch):
                callback.on_before_optimizer_step(trainer, module, optimizer=None)
        else:  # the window closes: one read-back, then the row
            callback.on_before_optimizer_step(trainer, module, optimizer=None)
    assert [step for step, _ in logger.rows] == [4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_device_synchronization_per_step_on_a_gpu():
    net, module, trainer, logger = _tiny_setup()
    net.cuda()
    callback = GradNorms(log_every_n_steps=3)
    callback.on_fit_start(trainer, module)
    for step in range(2):
        _backward(net, seed=step, device="cuda")
        trainer.global_step = step
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            callback.on_before_optimizer_step(trainer, module, optimizer=None)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert logger.rows == []


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_a_bad_window_is_refused_with_a_sentence(value):
    with pytest.raises(ConfigError, match="log_every_n_steps must be a positive integer or null"):
        GradNorms(log_every_n_steps=value)


def test_callbacks_grad_norms_writes_each_stage_to_metrics_csv(tmp_path):
    cfg = compose_config([*TINY, "callbacks=grad_norms", "test=false", "trainer.max_epochs=2",
                          "trainer.log_every_n_steps=2"], run_dir=tmp_path / "run")
    train(cfg)
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("grad_norm/total")]
    # 128 images in batches of 32: 4 steps an epoch, a row every 2 steps.
    assert [int(row["step"]) for row in rows] == [1, 3, 5, 7]
    assert [int(row["epoch"]) for row in rows] == [0, 0, 1, 1]
    stages = [key for key in rows[0] if key.startswith("grad_norm/")]
    assert sorted(stages) == sorted(f"grad_norm/{s}" for s in ("stem", "layer1", "layer2", "layer3", "fc", "total"))
    for row in rows:
        values = {key: float(row[key]) for key in stages}
        assert all(math.isfinite(v) and v > 0 for v in values.values())
        parts = math.sqrt(sum(v**2 for k, v in values.items() if k != "grad_norm/total"))
        # The mean of the total norms is at least the norm of the stages' means (Minkowski).
        assert parts <= values["grad_norm/total"] * (1 + 1e-5)


def test_grad_norms_are_off_by_default(tmp_path):
    cfg = compose_config(TINY, run_dir=tmp_path / "run")
    assert "grad_norms" not in cfg.callbacks
