"""`python -m resnet_lab.predict`: each file's top-k classes from a run's model with the run's
preprocessing, written to CSV or JSON; unreadable files listed and skipped; bad input exits 2
before any work."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import resnet_lab
from resnet_lab.configs import config_dir
from resnet_lab.data.image_files import decode_image_file
from resnet_lab.errors import ConfigError, DataError, UserError
from resnet_lab.predict import collect_inputs, predict
from tests.helpers import REPO, train_photo_run
from tests.helpers.fakes import photo_crops, save_image


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_photo_run(tmp_path_factory.mktemp("photos"))


@pytest.fixture
def new_images(tmp_path) -> Path:
    """Files the run never saw: crops of both photographs in several formats and modes, in
    nested folders, plus a file that is not an image and one that only claims to be."""
    folder = tmp_path / "new"
    for i, (image, suffix, mode) in enumerate(zip(photo_crops(4, size=(30, 26), seed=99),
                                                  (".jpg", ".png", ".webp", ".bmp"), ("RGB", "L", "RGBA", "P"))):
        save_image(folder / ("a" if i < 2 else "b/c") / f"new_{i}{suffix}", image, mode)
    (folder / "notes.txt").write_text("not an image")
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return folder


def predict_cfg(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="predict"):
        return compose(config_name="predict", overrides=list(overrides))


def run_predict(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "resnet_lab.predict", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_predictions_are_the_models_probabilities_for_each_file(run, new_images, capsys):
    result = predict(predict_cfg(f"ckpt_path={run}", f"inputs={new_images}", "top_k=2"))
    paths = [item["path"] for item in result["predictions"]]
    assert paths == sorted(str(p) for p in new_images.rglob("new_*"))  # recursive, images only
    assert [item["path"] for item in result["unreadable"]] == [str(new_images / "b" / "broken.jpg")]
    classifier = resnet_lab.load(run)
    for item in result["predictions"]:
        image = classifier.transform(decode_image_file(item["path"]))
        probabilities = classifier.probabilities(image[None])[0]
        best = probabilities.topk(2)
        assert [c["class"] for c in item["top_k"]] == [classifier.classes[i] for i in best.indices]
        assert [c["probability"] for c in item["top_k"]] == pytest.approx(best.values.tolist(), abs=1e-6)
    printed = capsys.readouterr().out
    assert f"{paths[0]}: {result['predictions'][0]['top_k'][0]['class']} " in printed
    assert "skipped 1 file(s) that do not decode" in printed and "broken.jpg" in printed


def test_ema_predictions_use_the_ema_weights(run, new_images):
    plain = predict(predict_cfg(f"ckpt_path={run}", f"inputs={new_images}/a", "top_k=3"))
    ema = predict(predict_cfg(f"ckpt_path={run}", f"inputs={new_images}/a", "top_k=3", "ema=true"))
    assert ema["ema"] and not plain["ema"]
    assert [c["probability"] for c in ema["predictions"][0]["top_k"]] != \
        [c["probability"] for c in plain["predictions"][0]["top_k"]]


def test_csv_and_json_hold_what_was_printed(run, new_images, tmp_path):
    csv_result = predict(predict_cfg(f"ckpt_path={run}", f"inputs={new_images}", f"output={tmp_path / 'p.csv'}"))
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 5 and rows[-1]["error"] and not rows[0]["error"]
    first = csv_result["predictions"][0]
    assert rows[0]["path"] == first["path"] and rows[0]["class_1"] == first["top_k"][0]["class"]
    assert float(rows[0]["probability_1"]) == pytest.approx(first["top_k"][0]["probability"], abs=1e-6)
    assert "class_3" in rows[0] and "class_4" not in rows[0]  # top_k=5, but 3 classes
    predict(predict_cfg(f"ckpt_path={run}", f"inputs={new_images}", f"output={tmp_path / 'p.json'}"))
    written = json.loads((tmp_path / "p.json").read_text())
    assert written["predictions"] == csv_result["predictions"] and written["unreadable"] == csv_result["unreadable"]


def test_inputs_as_file_glob_and_list(new_images, tmp_path):
    one = new_images / "a" / "new_0.jpg"
    assert collect_inputs(str(one)) == [one]
    assert collect_inputs(f"{new_images}/**/*.webp") == [new_images / "b" / "c" / "new_2.webp"]
    assert collect_inputs([str(one), str(new_images / "a")]) == [one, new_images / "a" / "new_1.png"]
    for bad, message in ((str(tmp_path / "absent.jpg"), "does not exist"), (f"{tmp_path}/*.png", "matches no file")):
        with pytest.raises(ConfigError, match=message):
            collect_inputs(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no image file"):
        collect_inputs(str(tmp_path / "empty"))


def test_nothing_readable_is_a_data_error(run, new_images):
    with pytest.raises(DataError, match="none of the 1 input file.*broken.jpg"):
        predict(predict_cfg(f"ckpt_path={run}", f"inputs={new_images / 'b' / 'broken.jpg'}"))


def test_an_existing_output_is_kept_unless_overwrite(run, new_images, tmp_path):
    output = tmp_path / "mine.csv"
    output.write_text("my notes\n")
    with pytest.raises(ConfigError, match="exists.*overwrite=true"):
        predict(predict_cfg(f"ckpt_path={run}", f"inputs={new_images}", f"output={output}"))
    assert output.read_text() == "my notes\n"
    predict(predict_cfg(f"ckpt_path={run}", f"inputs={new_images}", f"output={output}", "overwrite=true"))
    assert output.read_text().startswith("path,class_1")


def test_the_command_line(run, new_images, tmp_path):
    result = run_predict([f"ckpt_path={run}", f"inputs={new_images}/a", "top_k=1", "output=out.json"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0].startswith(f"{new_images}/a/new_0.jpg: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out.json"]  # no run directory, no log


@pytest.mark.parametrize(("args", "message"), [
    (["ckpt_path=/nowhere/best.ckpt", "inputs=new"], "ckpt_path '/nowhere/best.ckpt' does not exist"),
    (["ckpt_path={run}", "inputs=missing.jpg"], "inputs: 'missing.jpg' does not exist"),
    (["ckpt_path={run}"], "inputs is required"),
    (["inputs=new"], "ckpt_path is required"),
    (["ckpt_path={run}", "inputs=new", "output=out.txt"], "must end in .csv or .json"),
    (["ckpt_path={run}", "inputs=new", "output=nowhere/out.csv"], "does not exist"),
    (["ckpt_path={notes}", "inputs=new"], "is not a PyTorch checkpoint"),
    (["ckpt_path={run}/checkpoints", "inputs=new"], "is a directory but not a run directory"),
    (["ckpt_path={run}", "inputs=new", "top_k=0"], "top_k must be a positive integer"),
    (["ckpt_path={run}", "inputs=new", "accelerator=tpu"], "accelerator='tpu' is not one of"),
])
def test_bad_input_is_refused_with_one_sentence(run, new_images, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as error:
        predict(predict_cfg(*(a.format(run=run, notes=new_images / "notes.txt") for a in args)))
    assert message in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_bad_input_exits_2_from_the_command_line(new_images, tmp_path):
    result = run_predict(["ckpt_path=/nowhere/best.ckpt", "inputs=new", "output=out.csv"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == "error: ckpt_path '/nowhere/best.ckpt' does not exist."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
