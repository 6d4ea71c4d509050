"""Every option of every config group composes with the real primary config and instantiates."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from resnet_lab.config import config_dir
from resnet_lab.train import _instantiate_group, build_module, build_trainer
from tests.helpers import TINY, compose_config
from tests.helpers.fakes import write_photo_folder

CONF = config_dir()
# Groups whose options are objects to build, and how to build them.
BUILT_GROUPS = ("model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks")
# Models too big to build in the fast suite; test_models.py covers them.
HEAVY = {"resnet1202", "resnext101_32x8d", "wide_resnet101_2", "resnet152", "wrn_28_10"}


def options(group: str) -> list[str]:
    folder = CONF / group
    return sorted(
        str(path.relative_to(folder).with_suffix(""))
        for path in folder.rglob("*.yaml")
        if not path.name.startswith("_") and path.parent.name != "base"
    )


def test_every_group_folder_exists():
    for group in (*BUILT_GROUPS, "experiment", "paths", "hydra", "debug"):
        assert (CONF / group).is_dir(), group
    assert {"sgd", "adamw"} <= set(options("optimizer"))
    assert {"cosine", "multistep", "onecycle", "constant"} <= set(options("scheduler"))
    assert {"fast_dev_run", "overfit", "profiler"} <= set(options("debug"))


@pytest.mark.parametrize("option", [o for o in options("model") if o not in HEAVY])
def test_model_option_builds_and_runs(option, tmp_path):
    cfg = compose_config([*TINY, f"model={option}"], run_dir=tmp_path / "run")
    net = instantiate(cfg.model)
    out = net(torch.randn(2, cfg.data.in_chans, 32, 32))
    assert out.shape == (2, cfg.data.num_classes)


@pytest.mark.parametrize("option", options("data"))
def test_data_option_composes_and_instantiates(option, tmp_path):
    # data=folder reads the user's folder, whose classes the config counts.
    root = [f"data.root={write_photo_folder(tmp_path / 'photos', per_class=3)}"] if option == "folder" else []
    cfg = compose_config([f"data={option}", *root], run_dir=tmp_path / "run")
    for key in ("num_classes", "in_chans", "image_size", "batch_size"):
        assert isinstance(cfg.data[key], int), key
    OmegaConf.resolve(cfg)
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, L.LightningDataModule)
    assert datamodule.num_classes == cfg.data.num_classes


@pytest.mark.parametrize("group", ["optimizer", "scheduler"])
def test_optimizer_and_scheduler_options_build_and_step(group, tmp_path):
    for option in options(group):
        cfg = compose_config([*TINY, f"{group}={option}"], run_dir=tmp_path / "run")
        module = build_module(cfg, instantiate(cfg.model))
        optimizer = module.optimizer_factory(module.net.parameters())
        scheduler = module.scheduler_factory(optimizer, total_steps=200, steps_per_epoch=10)
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] > 0


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks"])
def test_trainer_logger_and_callback_options_instantiate(group, tmp_path):
    for option in options(group):
        cfg = compose_config([*TINY, f"{group}={option}"], run_dir=tmp_path / "run")
        callbacks = _instantiate_group(cfg.callbacks)
        loggers = _instantiate_group(cfg.logger)
        if group == "trainer" and cfg.trainer.accelerator not in ("cpu", "auto"):
            continue  # GPU trainers compose here; they are built on a GPU machine
        trainer = build_trainer(cfg, callbacks, loggers)
        assert isinstance(trainer, L.Trainer)


@pytest.mark.parametrize("option", options("experiment") + [f"debug/{o}" for o in options("debug")])
def test_experiment_and_debug_options_compose(option, tmp_path):
    group, _, name = option.rpartition("/") if option.startswith("debug/") else ("experiment", "", option)
    cfg = compose_config([f"{group}={name}"], run_dir=tmp_path / "run")
    assert cfg.model.name and cfg.data._target_


def test_configs_are_found_from_the_package():
    assert (CONF / "train.yaml").is_file()
    assert Path(CONF).name == "conf"
