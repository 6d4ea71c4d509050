"""The contract of every data module (resnet_lab/data/base.py): batch sizes checked in setup."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from resnet_lab.data import DigitsDataModule, SyntheticDataModule
from resnet_lab.errors import ConfigError
from tests.helpers import run_cli, run_dirs


def on_devices(data, world_size: int):
    data.trainer = SimpleNamespace(world_size=world_size, global_rank=0)
    return data


def test_a_batch_larger_than_the_training_set_is_refused_before_training():
    data = DigitsDataModule(batch_size=4096)
    with pytest.raises(ConfigError, match=r"data.batch_size=4096 is larger than the training set: 1257 images, "
                       r"so an epoch would have no complete batch.*data.batch_size <= 1257, e.g. data.batch_size=1024"):
        data.setup("fit")
    data.setup("test")  # evaluation alone needs no training batch
    DigitsDataModule(batch_size=1257).setup("fit")


def test_the_training_set_is_counted_per_device_under_ddp():
    """63 images on 2 devices: 31 each (the sampler drops one), so 2 x 32 is one too many."""
    data = on_devices(SyntheticDataModule(train_size=63, batch_size=64, image_size=8), 2)
    with pytest.raises(ConfigError, match=r"63 images \(31 per device on 2 devices, 32 per device per batch\).*"
                       r"data.batch_size <= 62, e.g. data.batch_size=32"):
        data.setup("fit")
    on_devices(SyntheticDataModule(train_size=63, batch_size=62, image_size=8), 2).setup("fit")


def test_the_evaluation_batch_is_checked_and_named_as_such():
    data = on_devices(SyntheticDataModule(batch_size=63, eval_batch_size=512, image_size=8), 3)
    with pytest.raises(ConfigError, match=r"^data.eval_batch_size=512 is the global batch and must divide evenly "
                       r"over 3 devices .*e.g. data.eval_batch_size=510"):
        data.setup("fit")
    data = on_devices(SyntheticDataModule(batch_size=64, eval_batch_size=63, image_size=8), 3)
    with pytest.raises(ConfigError, match=r"^data.batch_size=64 is the global batch"):
        data.setup("fit")


def test_the_command_refuses_it_instead_of_testing_an_untrained_model(tmp_path):
    result = run_cli(["data=digits", "data.batch_size=4096", "trainer.max_epochs=1"], tmp_path, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "data.batch_size=4096 is larger than the training set: 1257 images" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for run in run_dirs(tmp_path):  # if a directory is left, it does not claim a finished run
        record = run / "run.json"
        assert not record.exists() or json.loads(record.read_text()).get("status") != "finished"
