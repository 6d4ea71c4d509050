"""`python -m resnet_lab.evaluate`: reproduces the test accuracy a training run logged, writes
per-class accuracy and a confusion matrix, and refuses bad checkpoints before writing anything."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from resnet_lab.configs import config_dir
from resnet_lab.errors import CheckpointError, ConfigError
from resnet_lab.evaluate import evaluate
from tests.helpers import TINY, run_cli, run_dirs, tree_digest


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run of the real CLI (2 epochs on 16x16 synthetic images) that tested best.ckpt."""
    root = tmp_path_factory.mktemp("trained")
    result = run_cli([*TINY, "trainer.max_epochs=2"], root, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(root)
    return run


def evaluation_cfg(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="evaluate"):
        return compose(config_name="evaluate", overrides=list(overrides))


def test_evaluate_reproduces_the_logged_test_accuracy(trained, tmp_path):
    logged = json.loads((trained / "run.json").read_text())["metrics"]
    out = tmp_path / "evaluation"
    summary = evaluate(evaluation_cfg(f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}"), out)
    assert summary["test/acc_top1"] == pytest.approx(logged["test/acc_top1"], abs=1e-6)
    assert summary["test/acc_top5"] == pytest.approx(logged["test/acc_top5"], abs=1e-6)
    assert summary["test/loss"] == pytest.approx(logged["test/loss"], abs=1e-5)
    assert summary["logged_test/acc_top1"] == logged["test/acc_top1"]
    assert summary["samples"] == 64

    per_class = list(csv.DictReader(open(out / "per_class.csv")))
    assert [row["class"] for row in per_class] == [str(i) for i in range(10)]
    assert sum(int(row["samples"]) for row in per_class) == 64
    rows = list(csv.reader(open(out / "confusion_matrix.csv")))
    counts = [[int(x) for x in row[1:]] for row in rows[1:]]
    assert sum(map(sum, counts)) == 64
    correct = sum(counts[i][i] for i in range(10))
    assert correct / 64 == pytest.approx(summary["test/acc_top1"], abs=1e-9)
    for row, cls in zip(counts, per_class):  # per-class accuracy is the row's diagonal share
        if sum(row):
            assert float(cls["accuracy"]) == pytest.approx(row[per_class.index(cls)] / sum(row))
    with Image.open(out / "confusion_matrix.png") as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert OmegaConf.load(out / "evaluation.yaml").model.name == "resnet20"


def test_evaluate_on_the_validation_split_and_another_data_config(trained, tmp_path):
    summary = evaluate(evaluation_cfg(f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", "split=val"),
                       tmp_path / "val")
    assert summary["samples"] == 64 and summary["logged_test/acc_top1"] is None
    # Same classes, other images: the data config given on the command line replaces the run's.
    summary = evaluate(evaluation_cfg(f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", "data=synthetic",
                                      "data.image_size=16", "data.test_size=32", "data.seed=5"), tmp_path / "other")
    assert summary["samples"] == 32 and summary["logged_test/acc_top1"] is None


def test_evaluate_cli_writes_its_results_into_the_run(trained):
    result = subprocess.run(
        [sys.executable, "-m", "resnet_lab.evaluate", f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}"],
        cwd=trained.parent, env={**os.environ, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "test/acc_top1" in output and "the training run logged test/acc_top1" in output
    (evaluation,) = (trained / "evaluations").iterdir()
    assert {p.name for p in evaluation.iterdir()} >= {
        "metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "evaluation.yaml"}
    assert not (evaluation / ".hydra").exists()


def test_bad_checkpoints_are_refused_before_anything_is_written(trained, tmp_path, monkeypatch, capsys):
    from tests.helpers import Evil

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    evil = trained.parent / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil(f"touch {marker}")}, evil)
    truncated = tmp_path / "truncated.ckpt"
    data = (trained / "checkpoints" / "best.ckpt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    before = tree_digest(trained.parent)
    cases = [
        ([f"ckpt_path={tmp_path / 'nope.ckpt'}"], "does not exist"),
        ([f"ckpt_path={truncated}", "model=resnet20", "data=synthetic"], "is truncated or damaged"),
        ([f"ckpt_path={evil}"], "refused"),
        ([], "ckpt_path is required"),
        ([f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", "split=train"], "split='train'"),
        # Another data set whose images have 1 channel, the model of the run takes 3: the input
        # channels are named (not a state-dict mismatch of the model), before any directory.
        ([f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", "data=digits"],
         "the data given (data.in_chans=1) does not fit the model of run"),
    ]
    for overrides, message in cases:
        with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="evaluate"):
            cfg = compose(config_name="evaluate", overrides=overrides, return_hydra_config=True)
        with pytest.raises(SystemExit) as stop:
            OmegaConf.select(cfg, "hydra.run.dir")  # what Hydra resolves before creating anything
        assert stop.value.code == 2
        assert message in capsys.readouterr().err, overrides
    assert not marker.exists()
    assert tree_digest(trained.parent) == before
    assert not (tmp_path / "outputs").exists()


def test_another_architecture_lists_names_and_shapes(trained, tmp_path):
    with pytest.raises(CheckpointError) as error:
        evaluate(evaluation_cfg(f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", "model=resnet32"), tmp_path)
    message = str(error.value)
    assert "in the checkpoint, not in the model" not in message  # resnet32 is a superset
    assert "in the model, not in the checkpoint" in message and "layer1.3.conv1.weight (16, 16, 3, 3)" in message


def test_a_checkpoint_outside_a_run_needs_model_and_data(trained, tmp_path):
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes((trained / "checkpoints" / "best.ckpt").read_bytes())
    with pytest.raises(ConfigError, match="pass them, e.g. model=resnet20 data=cifar10"):
        evaluate(evaluation_cfg(f"ckpt_path={loose}"), tmp_path / "out")
    summary = evaluate(evaluation_cfg(f"ckpt_path={loose}", "model=resnet20", "data=synthetic",
                                      "data.image_size=16", "data.test_size=64"), tmp_path / "out")
    assert summary["samples"] == 64


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory) -> Path:
    from tests.helpers import train_photo_run

    return train_photo_run(tmp_path_factory.mktemp("ema"), "trainer.max_epochs=3")


def test_ema_true_evaluates_the_ema_weights_as_the_run_tested_them(ema_run, tmp_path):
    logged = json.loads((ema_run / "run.json").read_text())["metrics"]
    best = ema_run / "checkpoints" / "best.ckpt"
    ema = evaluate(evaluation_cfg(f"ckpt_path={best}", "ema=true"), tmp_path / "ema")
    trained = evaluate(evaluation_cfg(f"ckpt_path={best}"), tmp_path / "trained")
    assert ema["ema"] and ema["test/loss"] == pytest.approx(logged["test/loss_ema"], abs=1e-5)
    assert ema["test/acc_top1"] == pytest.approx(logged["test/acc_top1_ema"], abs=1e-6)
    assert ema["logged_test/acc_top1"] == logged["test/acc_top1_ema"]
    assert trained["test/loss"] == pytest.approx(logged["test/loss"], abs=1e-5)
    assert ema["test/loss"] != pytest.approx(trained["test/loss"], abs=1e-6)


def test_ema_true_on_a_run_without_an_ema_is_refused(trained, tmp_path):
    with pytest.raises(CheckpointError, match="holds no EMA weights.*callbacks=ema"):
        evaluate(evaluation_cfg(f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", "ema=true"), tmp_path)
