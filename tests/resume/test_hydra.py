"""resnet_lab.resume.hydra: where a training job writes is decided, and claimed, before Hydra
writes anything. An existing run directory is never overwritten, however it is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import REPO, TINY, run_cli, tree_digest

FAST = (*TINY, "debug=fast_dev_run", "+trainer.enable_progress_bar=false")
HOLD = "import sys, time\nfrom resnet_lab.run_dir import claim\nclaim(sys.argv[1])\nprint('claimed', flush=True)\ntime.sleep(600)\n"


def test_a_second_run_into_the_same_run_dir_is_refused_and_changes_nothing(tmp_path):
    run = tmp_path / "fixed"
    assert run_cli([*FAST, f"hydra.run.dir={run}"], tmp_path).returncode == 0
    before = tree_digest(run)
    again = run_cli([*FAST, "seed=7", f"hydra.run.dir={run}"], tmp_path)
    assert again.returncode == 2, again.stderr[-2000:]
    assert f"{run} already holds a run" in again.stderr
    assert f"resume={run}" in again.stderr and "Traceback" not in again.stderr
    assert tree_digest(run) == before


def test_a_directory_holding_other_files_is_never_written(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    result = run_cli([*FAST, f"hydra.run.dir={mine}"], tmp_path)
    assert result.returncode == 2 and "is not empty (notes.txt)" in result.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_rerun_multirun_into_the_same_sweep_dir_is_refused_and_changes_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_cli(["-m", *FAST, "seed=1,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = tree_digest(sweep)
    again = run_cli(["-m", *FAST, "seed=1,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert again.returncode == 2 and "already holds the jobs of a multirun (0, 1)" in again.stderr
    assert tree_digest(sweep) == before


def test_resume_auto_or_new_in_an_explicit_run_dir(tmp_path):
    """A requeued SLURM job with a fixed run directory: the first start is a new run there;
    the rerun of the same command continues it."""
    run = tmp_path / "fixed"
    command = [*TINY, "trainer.max_epochs=2", "+trainer.enable_progress_bar=false", "resume=auto_or_new",
               f"hydra.run.dir={run}"]
    stopped = run_cli([*command, "+callbacks.signal._target_=tests.helpers.SignalAt", "+callbacks.signal.step=5"],
                      tmp_path)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    record = json.loads((run / "run.json").read_text())
    assert (record["status"], record["epochs_done"]) == ("interrupted", 1)
    # The requeued job: the same command (its test callback removed would be a config change
    # that resume refuses, so the rerun keeps it; it has fired already: step 5 is behind).
    resumed = run_cli([*command, "+callbacks.signal._target_=tests.helpers.SignalAt", "+callbacks.signal.step=5"],
                      tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    record = json.loads((run / "run.json").read_text())
    assert (record["status"], record["epochs_done"]) == ("finished", 2)
    assert "resume=auto_or_new: continuing run" in (run / "train.log").read_text()


def test_a_run_in_use_by_another_process_is_refused(tmp_path):
    run = tmp_path / "fixed"
    assert run_cli([*TINY, "trainer.max_epochs=2", "+callbacks.signal._target_=tests.helpers.SignalAt",
                    "+callbacks.signal.step=1", f"hydra.run.dir={run}"], tmp_path).returncode == 143
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "claimed"
        before = tree_digest(run)
        result = run_cli([f"resume={run}"], tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert f"run directory {run} is in use by another process (pid {holder.pid}" in result.stderr
        assert tree_digest(run) == before
    finally:
        holder.kill()
        holder.wait()
