"""The README's "Your own images" path, end to end through the real commands: train on a folder
of photographs, classify photos the run never saw, export to ONNX, load in Python."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import resnet_lab
from resnet_lab.data.image_files import decode_image_file
from resnet_lab.module import ImageClassifier
from tests.helpers import REPO, run_cli, run_dirs
from tests.helpers.fakes import photo_crops, save_image

CLASSES = ("china", "flower")  # crops of scikit-learn's two photographs


def _write(folder: Path, per_class: int, seed: int) -> Path:
    for label, name in enumerate(CLASSES):
        for i, image in enumerate(photo_crops(per_class, size=(64, 48), seed=seed + label, photo=label)):
            save_image(folder / name / f"{name}_{i:03d}.jpg", image)
    return folder


def _command(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_train_on_photos_then_predict_export_and_load(tmp_path):
    _write(tmp_path / "photos", per_class=40, seed=0)
    new = _write(tmp_path / "new", per_class=10, seed=1000)  # other crops: never seen in training
    trained = run_cli(["data=folder", "data.root=photos", "model=resnet20", "data.image_size=32",
                       "data.batch_size=16", "data.num_workers=2", "trainer.max_epochs=8", "optimizer.lr=0.4"],
                      tmp_path, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run,) = run_dirs(tmp_path)

    predicted = _command("resnet_lab.predict", [f"ckpt_path={run}", "inputs=new", "top_k=2", "output=p.csv"], tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 20
    correct = sum(Path(row["path"]).parent.name == row["class_1"] for row in rows)
    assert correct >= 18, predicted.stdout  # observed: 20 of 20

    exported = _command("resnet_lab.export", [f"ckpt_path={run}", "format=onnx"], tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    import onnxruntime

    classifier = resnet_lab.load(run)
    batch = torch.stack([classifier.transform(decode_image_file(str(p))) for p in sorted(new.rglob("*.jpg"))])
    session = onnxruntime.InferenceSession(str(run / "exports" / "best.onnx"), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"images": batch.numpy()})
    module = ImageClassifier.load_from_checkpoint(run / "checkpoints" / "best.ckpt").eval()
    with torch.inference_mode():
        logits = classifier.net(batch)
        assert torch.equal(module(batch), logits)
    assert np.abs(onnx_logits - logits.numpy()).max() < 1e-4
    assert classifier.classes == list(CLASSES)
