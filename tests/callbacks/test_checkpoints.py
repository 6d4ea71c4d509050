"""resnet_lab.callbacks.checkpoints: last.ckpt carries the best checkpoint's decision on
its own validation; one tie rule for best.ckpt and run.json."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from resnet_lab.callbacks import LastCheckpoint
from resnet_lab.checkpoint_files import (
    load_checkpoint_file,
)
from resnet_lab.train import build_module, build_trainer, instantiate_group, train
from tests.helpers import TINY, compose_config

# 4 batches of 32 per epoch; a checkpoint after every optimizer step.
STEPS = (*TINY, "trainer.max_epochs=2", "logger=none", "test=false",
         "callbacks.last_checkpoint.every_n_train_steps=1")







@pytest.mark.parametrize("last_first", [True, False], ids=["last_checkpoint first", "model_checkpoint first"])
def test_last_ckpt_holds_the_best_score_of_its_own_validation(tmp_path, last_first):
    """Whatever the callback order, last.ckpt written at validation end carries the best
    checkpoint's decision on that very validation (a stale "best so far" let a resumed run
    overwrite best.ckpt with a worse epoch)."""
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "logger=none", "test=false"], run_dir=run)
    callbacks = instantiate_group(cfg.callbacks)
    callbacks.sort(key=lambda c: isinstance(c, LastCheckpoint) != last_first)
    trainer = build_trainer(cfg, callbacks, [])
    trainer.fit(build_module(cfg, instantiate(cfg.model)), datamodule=instantiate(cfg.data))
    checkpoint = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["best_model_score"] is not None
    assert float(state["best_model_score"]) == float(trainer.callback_metrics["val/acc_top1"])


def test_a_tie_keeps_the_earlier_epoch_in_best_ckpt_and_in_run_json(tmp_path):
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "trainer.max_epochs=3", "logger=none", "test=false", "optimized_metric=val/tied",
                          "+callbacks.tie._target_=tests.helpers.LogConstant", "+callbacks.tie.name=val/tied",
                          "+callbacks.tie.value=0.5"], run_dir=run)
    train(cfg)
    record = json.loads((run / "run.json").read_text())
    assert record["best"] == {"val/tied": 0.5, "epoch": 0}
    assert load_checkpoint_file(run / "checkpoints" / "best.ckpt")["epoch"] == 0
