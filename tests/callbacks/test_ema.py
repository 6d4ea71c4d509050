"""The EMA callback: the average follows the EMA recurrence, is evaluated beside the trained
weights as val/*_ema and test/*_ema, and travels in checkpoints without replacing them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from resnet_lab.callbacks.ema import EMA, EMA_STATE_KEY
from resnet_lab.errors import ConfigError
from resnet_lab.train import build_module, build_trainer, instantiate_group
from tests.helpers import TINY, compose_config

DECAY = 0.5


class _WeightsAfterEachStep(L.Callback):
    def __init__(self) -> None:
        self.steps: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append([p.detach().clone() for p in pl_module.net.parameters()])


def _last(cfg) -> Path:
    """checkpoints/last.ckpt: the newest training state, written after each validation."""
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """One short fit with the EMA callback, shared by the tests that inspect it."""
    cfg = compose_config([*TINY, "callbacks=ema", f"callbacks.ema.decay={DECAY}", "logger=none",
                          "trainer.max_epochs=1", "+trainer.enable_progress_bar=false"],
                         run_dir=tmp_path_factory.mktemp("ema") / "run")
    L.seed_everything(0)
    spy = _WeightsAfterEachStep()
    callbacks = [*instantiate_group(cfg.callbacks), spy]
    (ema,) = [c for c in callbacks if isinstance(c, EMA)]
    module = build_module(cfg, instantiate(cfg.model))
    datamodule = instantiate(cfg.data)
    trainer = build_trainer(cfg, callbacks, [])
    trainer.fit(module, datamodule=datamodule)
    return cfg, trainer, module, datamodule, ema, spy


def test_the_average_follows_the_ema_recurrence_and_the_model_keeps_its_weights(ema_run):
    _, trainer, module, _, ema, spy = ema_run
    assert trainer.global_step == len(spy.steps) == 4
    expected = spy.steps[0]  # the first update copies the weights
    for weights in spy.steps[1:]:
        expected = [DECAY * e + (1 - DECAY) * w for e, w in zip(expected, weights)]
    average = list(ema._average_model.module.net.parameters())
    for got, want in zip(average, expected):
        torch.testing.assert_close(got, want)
    trained = list(module.net.parameters())
    for got, want in zip(trained, spy.steps[-1]):
        assert torch.equal(got, want)  # Lightning's own callback would have copied the average in
    assert any(not torch.allclose(a, t) for a, t in zip(average, trained))


def test_the_average_is_evaluated_beside_the_trained_weights(ema_run):
    cfg, trainer, module, datamodule, ema, _ = ema_run
    metrics = trainer.callback_metrics
    for key in ("val/acc_top1", "val/loss", "val/acc_top1_ema", "val/acc_top5_ema", "val/loss_ema"):
        assert key in metrics, key
    assert float(metrics["val/loss_ema"]) != pytest.approx(float(metrics["val/loss"]), rel=1e-4)

    # The same numbers from an ordinary validation of the average's weights.
    checkpoint = torch.load(_last(cfg), weights_only=True)
    fresh = build_module(cfg, instantiate(cfg.model))
    fresh.load_state_dict(checkpoint[EMA_STATE_KEY])
    (result,) = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                          enable_checkpointing=False).validate(
        fresh, datamodule=datamodule, verbose=False)
    assert result["val/loss"] == pytest.approx(float(metrics["val/loss_ema"]), rel=1e-5)
    assert result["val/acc_top1"] == pytest.approx(float(metrics["val/acc_top1_ema"]))


def test_checkpoints_keep_the_trained_weights_and_carry_the_average(ema_run):
    cfg, trainer, module, datamodule, ema, _ = ema_run
    checkpoint = torch.load(_last(cfg), weights_only=True)
    state = checkpoint["state_dict"]
    for name, value in module.state_dict().items():
        if name.startswith("net."):  # the network's weights and buffers (metric states differ)
            torch.testing.assert_close(state[name], value)
    average = ema._average_model.module.state_dict()
    assert set(checkpoint[EMA_STATE_KEY]) == set(state)
    for name, value in checkpoint[EMA_STATE_KEY].items():
        torch.testing.assert_close(value, average[name])

    # Testing a checkpoint evaluates both: the trained weights and the average from the file.
    (result,) = trainer.test(module, datamodule=datamodule, ckpt_path=str(_last(cfg)), verbose=False,
                             weights_only=True)
    assert {"test/acc_top1", "test/loss", "test/acc_top1_ema", "test/loss_ema"} <= set(result)


def test_a_checkpoint_without_an_average_is_tested_without_ema_metrics(tiny_cfg, tmp_path):
    cfg = tiny_cfg("logger=none", "callbacks=none", "+trainer.enable_progress_bar=false")
    module = build_module(cfg, instantiate(cfg.model))
    datamodule = instantiate(cfg.data)
    trainer = build_trainer(cfg, [], [])
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(path)
    tester = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[EMA()],
                       enable_checkpointing=False, default_root_dir=tmp_path)
    (result,) = tester.test(module, datamodule=datamodule, ckpt_path=str(path), verbose=False,
                            weights_only=True)
    assert "test/acc_top1" in result and not any(key.endswith("_ema") for key in result)


@pytest.mark.parametrize(("option", "value"), [("decay", 1.0), ("decay", 0.0), ("update_every_n_steps", 0)])
def test_bad_ema_settings_are_config_errors(option, value):
    with pytest.raises(ConfigError, match=option):
        EMA(**{option: value})
