"""resnet_lab.train: the training job as a function of a composed config."""

from __future__ import annotations

import csv
import json

import pytest

from resnet_lab.train import scaled_lr, train


def test_train_returns_the_metric_that_optimized_metric_names(tiny_cfg, tmp_path):
    """The best value over the run when the best checkpoint monitors it, else the last one."""
    record = lambda: json.loads((tmp_path / "run" / "run.json").read_text())  # noqa: E731
    value = train(tiny_cfg("trainer.max_epochs=2", "logger=csv"))
    with open(tmp_path / "run" / "csv" / "metrics.csv", newline="") as file:
        logged = [float(row["val/acc_top1"]) for row in csv.DictReader(file) if row.get("val/acc_top1")]
    assert value == pytest.approx(max(logged)) and value == pytest.approx(record()["best"]["val/acc_top1"])
    for metric in ("val/loss", "test/loss", "train/acc_top1"):
        (tmp_path / "run").rename(tmp_path / f"done-{metric.replace('/', '-')}")
        value = train(tiny_cfg("trainer.max_epochs=1", "logger=none", "callbacks=none", f"optimized_metric={metric}"))
        assert value == pytest.approx(record()["metrics"][metric]), metric


def test_lr_is_given_per_256_images_and_scaled_to_the_global_batch(tiny_cfg):
    cfg = tiny_cfg("optimizer.lr=0.1", "data.batch_size=64", "trainer.accumulate_grad_batches=2")
    assert scaled_lr(cfg) == pytest.approx(0.1 * 128 / 256)
    cfg = tiny_cfg("optimizer.lr=0.1", "data.batch_size=64", "lr_base_batch_size=null")
    assert scaled_lr(cfg) == pytest.approx(0.1)


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
