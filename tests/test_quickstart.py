"""`make train`'s experiment reaches its accuracy target on real data (the bundled digits)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli, run_dirs


@pytest.mark.slow
def test_quickstart_reaches_97_percent_test_accuracy(tmp_path):
    result = run_cli(["experiment=quickstart", "+trainer.enable_progress_bar=false"], tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["metrics"]["test/acc_top1"] >= 0.97, record["metrics"]
