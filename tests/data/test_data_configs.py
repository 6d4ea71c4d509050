"""conf/data: every config keeps the contract, and the real training entry point runs on one."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from resnet_lab.configs import config_dir
from resnet_lab.data.cifar import CIFAR_RELEASES
from resnet_lab.train import train
from tests.helpers import compose_config
from tests.helpers.fakes import write_cifar, write_photo_folder

DATA_CONFIGS = sorted(path.stem for path in (config_dir() / "data").glob("*.yaml"))
FILE_BASED = {"cifar10", "cifar100", "fashion_mnist", "imagenet_subset", "imagenette"}
MIXING = ("mixup_alpha", "cutmix_alpha", "mix_prob", "cutmix_prob")
COUNTED_FROM_THE_DATA = {"folder"}


@pytest.mark.parametrize("option", DATA_CONFIGS)
def test_data_config_keeps_the_contract(option, tmp_path):
    assert FILE_BASED <= set(DATA_CONFIGS)
    raw = OmegaConf.load(config_dir() / "data" / f"{option}.yaml")
    counted = option in COUNTED_FROM_THE_DATA
    for key in ("in_chans", "image_size", "batch_size") if counted else ("num_classes", "in_chans", "image_size", "batch_size"):
        assert isinstance(raw[key], int), f"{option}: {key} must be a literal integer"
    overrides = []
    if counted:  # the user's own images: the config counts the classes of the folder given
        assert OmegaConf.to_container(raw)["num_classes"] == "${folder_classes:${data.root},${data.index}}"
        overrides = [f"data.root={write_photo_folder(tmp_path / 'photos', per_class=3)}"]
        raw.num_classes = 3
    assert raw._target_.startswith("resnet_lab.data.")
    assert OmegaConf.to_container(raw)["seed"] == "${seed}"
    assert "num_workers" in raw and all(key in raw for key in MIXING)
    if option in FILE_BASED:
        assert OmegaConf.to_container(raw)["root"].startswith("${paths.data_dir}/")

    cfg = compose_config([f"data={option}", "seed=7", *overrides], run_dir=tmp_path / "run")
    # Nothing is read or downloaded at construction (download happens in prepare_data).
    data = instantiate(cfg.data)
    assert (data.num_classes, data.in_chans, data.image_size) == (raw.num_classes, raw.in_chans, raw.image_size)
    assert data.seed == 7 and len(data.classes) == data.num_classes
    assert cfg.model.num_classes == data.num_classes and cfg.model.in_chans == data.in_chans
    assert not (tmp_path / "data").exists()


def test_training_entry_point_on_cifar_files_with_the_device_path_and_cutmix(tmp_path, monkeypatch):
    """The real `train(cfg)` on fake CIFAR-10 files: device-resident loader on the CPU, MixUp
    and CutMix soft targets into the LightningModule's loss, validation and test."""
    run_dir = tmp_path / "run"
    data_root = run_dir.parent / "data" / "cifar10"
    monkeypatch.setitem(CIFAR_RELEASES, "cifar10", write_cifar(data_root, train_per_file=20, test_size=32, archive=False))
    cfg = compose_config(
        [
            "data=cifar10", "data.download=false", "data.val_size=20", "data.batch_size=16",
            "data.eval_batch_size=16", "data.device_resident=true", "data.mixup_alpha=0.2",
            "data.cutmix_alpha=1.0", "model=resnet20", "trainer.max_epochs=1", "logger=none",
        ],
        run_dir=run_dir,
    )
    value = train(cfg)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and "test/acc_top1" in record["metrics"]
    assert value == pytest.approx(record["best"]["val/acc_top1"])  # the run trained and was tested
