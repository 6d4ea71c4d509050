"""The package works when installed from a wheel, not only from the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from tests.helpers import REPO


def test_wheel_carries_the_configs_and_runs_from_anywhere(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheel_dir), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheel_dir.glob("resnet_lab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "resnet_lab/conf/train.yaml" in names
    assert any(n.startswith("resnet_lab/conf/model/") for n in names)

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -I would drop PYTHONPATH too; -P keeps the current directory off sys.path, so the
    # only resnet_lab importable is the installed one.
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-P", "-c",
         "import resnet_lab, sys; from resnet_lab.configs import config_dir; "
         "print(resnet_lab.__file__); print(config_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    module_file, conf = result.stdout.split()
    assert module_file.startswith(str(site)) and conf == str(site / "resnet_lab" / "conf")
    result = subprocess.run(
        [sys.executable, "-P", "-m", "resnet_lab", "--cfg", "job", "model=resnet56"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "name: resnet56" in result.stdout
