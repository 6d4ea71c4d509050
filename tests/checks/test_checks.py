"""resnet_lab.checks: every value, key and combination that cannot work is refused with a
sentence naming the key, before anything is built."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from resnet_lab.checks import check_config
from resnet_lab.errors import ConfigError
from tests.helpers import TINY, compose_config, config_options


def _refused(tmp_path, *overrides: str) -> str:
    cfg = compose_config([*TINY, *overrides], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    return str(caught.value)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("optimizer.weight_decay=-0.01", "optimizer.weight_decay must be a finite number >= 0, got -0.01"),
        ("optimizer.weight_decay=lots", "optimizer.weight_decay must be a finite number >= 0, got 'lots'"),
        ("optimizer.lr=nan", "optimizer.lr must be a positive finite number, got nan"),
        ("optimizer.lr=inf", "optimizer.lr must be a positive finite number, got inf"),
        ("module.label_smoothing=1.5", "module.label_smoothing must be a number in [0.0, 1.0), got 1.5"),
        ("module.label_smoothing=-0.1", "module.label_smoothing must be a number in [0.0, 1.0), got -0.1"),
        ("model.num_classes=5", "model.num_classes=5 but the data has 10 classes"),
        ("model.in_chans=1", "model.in_chans=1 but the data has 3 input channels"),
        ("seed=abc", "seed must be an integer, got 'abc'"),
        ("+optimizer.lrr=0.1", "optimizer.lrr is not a setting of optimizer (torch.optim.sgd.SGD takes no 'lrr'). Did you mean lr?"),
        ("+foo=1", "foo is not a setting of resnet_lab, so nothing would read it."),
        ("+seeed=1", "Did you mean seed?"),
        ("trainer.strategy=ddp_spawn", "trainer.strategy=ddp_spawn starts the training processes with multiprocessing's spawn"),
        ("+trainer.max_epoch=3", "trainer.max_epoch is not a setting of trainer"),
    ],
)
def test_bad_values_and_keys_are_refused_with_the_key_named(tmp_path, override, words):
    assert words in _refused(tmp_path, override)


def test_eval_batch_size_is_checked_and_named_like_the_training_batch(tmp_path):
    message = _refused(tmp_path, "trainer=ddp_cpu", "trainer.devices=3", "data.batch_size=63", "data.eval_batch_size=64")
    assert message.startswith("data.eval_batch_size=64 is a global batch and must divide evenly over 3 devices")


def test_the_default_config_and_every_recipe_pass(tmp_path):
    check_config(compose_config(TINY, run_dir=tmp_path / "run"))
    for recipe in config_options("experiment"):
        check_config(compose_config([f"experiment={recipe}", "trainer=cpu", "module.channels_last=false"],
                                    run_dir=tmp_path / "run"))


@pytest.mark.parametrize("option", ["cpu", "ddp_cpu"])
def test_the_trainer_node_instantiates_as_it_stands(tmp_path, option):
    import lightning as L

    cfg = compose_config([*TINY, f"trainer={option}"], run_dir=tmp_path / "run")
    assert isinstance(instantiate(cfg.trainer, logger=False, enable_checkpointing=False), L.Trainer)
