"""`python -m resnet_lab.export`: ONNX (onnxruntime) and TorchScript files that compute the
PyTorch model's logits, for any batch size, and carry the class names and preprocessing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from hydra import compose, initialize_config_dir

import resnet_lab
from resnet_lab.configs import config_dir
from resnet_lab.errors import ConfigError, UserError
from resnet_lab.export import ExportMismatch, export
from tests.helpers import REPO, train_photo_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_photo_run(tmp_path_factory.mktemp("photos"))


def export_cfg(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="export"):
        return compose(config_name="export", overrides=list(overrides))


def _images(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(n))


def test_onnx_export_matches_pytorch_under_onnxruntime_for_any_batch(run, tmp_path):
    result = export(export_cfg(f"ckpt_path={run}", f"output={tmp_path / 'model.onnx'}"))
    assert result["max_abs_difference"] <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "images" and isinstance(session.get_inputs()[0].shape[0], str)
    classifier = resnet_lab.load(run)
    for n in (1, 5):  # neither the traced batch (2) nor the checked one (3)
        (logits,) = session.run(None, {"images": _images(n).numpy()})
        with torch.inference_mode():
            expected = classifier.net(_images(n)).numpy()
        assert logits.shape == (n, 3) and np.abs(logits - expected).max() < 1e-4


def test_onnx_metadata_carries_classes_and_preprocessing(run, tmp_path):
    export(export_cfg(f"ckpt_path={run}", f"output={tmp_path / 'model.onnx'}"))
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(props["classes"]) == ["china", "flower", "noise"]
    preprocessing = json.loads(props["preprocessing"])
    assert preprocessing == resnet_lab.load(run).preprocessing.to_dict()
    assert (preprocessing["crop_size"], preprocessing["resize_size"]) == (16, 18)
    assert json.loads(props["ema"]) is False


def test_torchscript_export_of_the_ema_weights(run, tmp_path):
    result = export(export_cfg(f"ckpt_path={run}", "format=torchscript", "ema=true"))
    output = run / "exports" / "best_ema.pt"
    assert result["output"] == str(output) and result["max_abs_difference"] == 0.0
    extra = {"resnet_lab.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(output), _extra_files=extra)
    metadata = json.loads(extra["resnet_lab.json"])
    assert json.loads(metadata["classes"]) == ["china", "flower", "noise"] and json.loads(metadata["ema"]) is True
    ema, trained = resnet_lab.load(run, ema=True), resnet_lab.load(run)
    with torch.inference_mode():
        assert torch.equal(scripted(_images(4)), ema.net(_images(4)))
        assert not torch.equal(scripted(_images(4)), trained.net(_images(4)))
    output.unlink()


def test_an_export_over_tolerance_is_not_kept(run, tmp_path):
    output = tmp_path / "model.onnx"
    with pytest.raises(ExportMismatch, match=r"logits up to .* \(tolerance 0.0\); it was not kept"):
        export(export_cfg(f"ckpt_path={run}", f"output={output}", "tolerance=0.0"))
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_an_existing_file_is_kept_unless_overwrite(run, tmp_path):
    output = tmp_path / "model.pt"
    output.write_bytes(b"mine")
    with pytest.raises(ConfigError, match="exists.*overwrite=true"):
        export(export_cfg(f"ckpt_path={run}", "format=torchscript", f"output={output}"))
    assert output.read_bytes() == b"mine"
    export(export_cfg(f"ckpt_path={run}", "format=torchscript", f"output={output}", "overwrite=true"))
    assert output.read_bytes() != b"mine"


@pytest.mark.parametrize(("overrides", "message"), [
    ([], "ckpt_path is required"),
    (["ckpt_path={run}", "format=tflite"], "format='tflite' is not one of onnx, torchscript"),
    (["ckpt_path={run}", "tolerance=-1"], "tolerance must be a number >= 0"),
    (["ckpt_path={run}", "output={tmp}/nowhere/model.onnx"], "does not exist"),
    (["ckpt_path={tmp}/missing.ckpt"], "does not exist"),
])
def test_bad_input_is_refused_before_anything_is_written(run, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        export(export_cfg(*(o.format(run=run, tmp=tmp_path) for o in overrides)))
    assert list(tmp_path.iterdir()) == [] and not list((run / "exports").glob("*"))


def test_the_command_line_prints_the_difference(run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "resnet_lab.export", f"ckpt_path={run}", "output=m.onnx"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "onnxruntime" in result.stdout and "largest |logit difference|" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
