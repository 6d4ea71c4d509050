"""resnet_lab.resume.migrate: runs started by earlier versions resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from resnet_lab.resume.migrate import migrate
from resnet_lab.train import train
from tests.helpers import TINY, compose_config, run_cli

OLD_CONFIG = Path(__file__).resolve().parents[1] / "helpers" / "old_run_config.yaml"


def test_moved_keys_and_classes_are_renamed_and_new_keys_come_from_today():
    old = OmegaConf.to_container(OmegaConf.load(OLD_CONFIG), resolve=False)
    today = OmegaConf.to_container(compose_config([*TINY, "trainer.max_epochs=3", "callbacks=none"]), resolve=False)
    migrated = migrate(old, today)
    assert "compile" not in migrated["trainer"] and "channels_last" not in migrated["trainer"]
    assert migrated["module"]["channels_last"] is False and migrated["module"]["compile"] is False
    assert migrated["logger"]["csv"]["_target_"] == "resnet_lab.loggers.CSVLogger"
    assert migrated["callbacks"]["last_checkpoint"]["_target_"] == "resnet_lab.callbacks.LastCheckpoint"
    assert migrated["run_record"] == today["run_record"] and migrated["tags"] == []
    # A collection keeps its own entries (today's command has none here), and values the run
    # had are never replaced.
    assert set(migrated["callbacks"]) == set(old["callbacks"])
    assert migrated["trainer"]["max_epochs"] == 3 and migrated["model"]["name"] == "resnet20"


@pytest.mark.slow
def test_a_run_started_by_the_previous_version_resumes(tmp_path):
    """The run directory of a run the previous version started and that was interrupted (its
    config as that version wrote it), continued by `resume=<dir>` alone."""
    run = tmp_path / "old"
    cfg = compose_config([*TINY, "trainer.max_epochs=3", "callbacks.last_checkpoint.every_n_train_steps=1",
                          "+callbacks.signal._target_=tests.helpers.SignalAt", "+callbacks.signal.step=6"], run_dir=run)
    with pytest.raises(SystemExit):
        train(cfg)
    (run / ".hydra").mkdir()
    shutil.copy(OLD_CONFIG, run / ".hydra" / "config.yaml")
    resumed = run_cli([f"resume={run}"], tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert (record["status"], record["epochs_done"]) == ("finished", 3)
    assert "test/acc_top1" in record["metrics"]
