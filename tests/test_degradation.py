"""The degradation problem of He et al. 2015 (Figure 6) on real data, from one command.

`experiment=degradation_cpu` trains plain-20, plain-56, ResNet-20 and ResNet-56 on
scikit-learn's handwritten digits, 15 epochs each: about 6 minutes on a quiet 2-core CPU, half
an hour on a loaded one (docs/RESULTS.md). The whole recipe, not a shortened one: ResNet-56
catches up late (9.6 points of training error behind ResNet-20 at epoch 5, 0.9 at epoch 10),
and a shorter schedule was not measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from resnet_lab.configs import config_dir
from resnet_lab.runs.report import MultirunReport
from resnet_lab.train import scaled_lr
from tests.helpers import compose_config, run_cli

# Percentage points of final training error (docs/RESULTS.md): plain-56 ends tens of points
# above plain-20; ResNet-56 within a point (13 of 1,257 training images) of ResNet-20.
PLAIN_GAP = 10.0
RESIDUAL_MARGIN = 1.0


def _final_training_errors(sweep: Path) -> dict[str, float]:
    errors = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "run.json").is_file()):
        record = json.loads((job / "run.json").read_text())
        assert record["status"] == "finished", job
        name = OmegaConf.load(job / ".hydra" / "config.yaml").model.name
        errors[name] = 100.0 * (1.0 - record["metrics"]["train/acc_top1"])
    return errors


def test_one_multirun_of_the_four_nets_with_gradient_norms_and_a_report(tmp_path):
    cfg = compose_config(["experiment=degradation_cpu"], run_dir=tmp_path / "run")
    assert cfg.data._target_.endswith("DigitsDataModule") and cfg.trainer.accelerator == "cpu"
    assert scaled_lr(cfg) == pytest.approx(0.1 * 32 / 128)  # the paper's LR per image
    assert "grad_norms" in cfg.callbacks
    hydra_cfg = OmegaConf.load(config_dir() / "experiment" / "degradation_cpu.yaml").hydra
    assert hydra_cfg.mode == "MULTIRUN"
    assert hydra_cfg.sweeper.params.model.split(",") == ["plain20", "plain56", "resnet20", "resnet56"]
    report = instantiate(hydra_cfg.callbacks.report)
    assert isinstance(report, MultirunReport)
    assert report.figures == {"errors.png": None, "grad_norms.png": ["grad_norm/*"]}


@pytest.mark.slow
def test_deeper_plain_nets_train_worse_and_deeper_resnets_do_not(tmp_path):
    # One thread: the numbers of docs/RESULTS.md (threads change the order of floating-point
    # sums), and on a shared 2-core machine two threads per process ran ten times slower.
    result = run_cli(["experiment=degradation_cpu", "+trainer.enable_progress_bar=false"], tmp_path,
                     timeout=3600, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    errors = _final_training_errors(sweep)
    assert set(errors) == {"plain20", "plain56", "resnet20", "resnet56"}
    assert errors["plain56"] - errors["plain20"] >= PLAIN_GAP, errors
    assert errors["resnet56"] - errors["resnet20"] <= RESIDUAL_MARGIN, errors
    # The same command leaves the figures and the table.
    for name in ("errors.png", "grad_norms.png"):
        with Image.open(sweep / name) as image:
            assert image.format == "PNG", name
    table = (sweep / "results.md").read_text()
    assert all(f"| {model} |" in table for model in errors)
