"""resnet_lab.run_dir: the contract of a run directory (records, statuses, the exclusive
claim, atomic writes, liveness)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from resnet_lab import run_dir
from resnet_lab.errors import ConfigError
from resnet_lab.runs import Run
from tests.helpers import REPO

HOLD = (
    "import sys, time\n"
    "from resnet_lab.run_dir import claim\n"
    "claim(sys.argv[1])\n"
    "print('claimed', flush=True)\n"
    "time.sleep(600)\n"
)


def test_a_claimed_directory_is_refused_to_another_process_until_it_dies(tmp_path):
    target = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with pytest.raises(ConfigError, match=rf"in use by another process \(pid {holder.pid} on"):
            run_dir.claim(target)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the operating system drops the lock
        holder.wait()
    assert run_dir.claim(target) == target.resolve()
    assert run_dir.holds(target)
    run_dir.release(target)
    assert not run_dir.holds(target)


def test_claiming_twice_in_one_process_is_a_no_op(tmp_path):
    path = run_dir.claim(tmp_path / "run")
    assert run_dir.claim(tmp_path / "run") == path
    run_dir.release(path)


def test_a_directory_that_cannot_be_created_is_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create the run directory .* Give a directory you can write"):
        run_dir.claim(blocker / "run")


@pytest.mark.parametrize(
    ("record", "status"),
    [
        ({"status": "running", "pid": 2**22 + 12345, "host": os.uname().nodename}, "interrupted"),
        ({"status": "running", "pid": os.getpid(), "host": os.uname().nodename, "command": ""}, "running"),
        ({"status": "trained", "pid": 2**22 + 12345, "host": os.uname().nodename}, "interrupted"),
        ({"status": "failed", "exception": "TrialPruned: trial 3 pruned after epoch 2"}, "pruned"),
        ({"status": "finished"}, "finished"),
        ({"status": "nonsense"}, "unknown"),
    ],
)
def test_the_status_a_reader_sees(record, status):
    assert run_dir.status_of(record) is run_dir.Status(status)


def test_a_damaged_record_is_reported_as_damaged_not_unknown(tmp_path):
    (tmp_path / run_dir.RECORD_FILE).write_text('{"status": "runn')
    with pytest.raises(run_dir.DamagedFile, match="run.json is damaged"):
        run_dir.read_record(tmp_path)
    run = Run(tmp_path)
    assert run.status == "damaged"
    assert any("run.json is damaged" in problem for problem in run.problems)


def test_a_damaged_config_is_reported_not_shown_as_empty(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("model: [unclosed\n")
    run_dir.write_record(tmp_path, {"status": "finished"})
    run = Run(tmp_path)
    assert run.config == {}
    assert any("config.yaml is damaged" in problem for problem in run.problems)
    with pytest.raises(ConfigError, match="is damaged"):
        run_dir.stored_config(tmp_path)


def test_records_are_written_whole(tmp_path, monkeypatch):
    run_dir.write_record(tmp_path, {"status": "running", "epochs_done": 1})

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        run_dir.write_record(tmp_path, {"status": "finished"})
    assert json.loads((tmp_path / run_dir.RECORD_FILE).read_text())["epochs_done"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_only_an_unstarted_directory_is_removed(tmp_path):
    unstarted = tmp_path / "a"
    (unstarted / ".hydra").mkdir(parents=True)
    (unstarted / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (unstarted / "train.log").write_text("")
    run_dir.claim(unstarted)
    assert run_dir.remove_if_unstarted(unstarted) and not unstarted.exists()
    started = tmp_path / "b"
    started.mkdir()
    (started / "train.log").write_text("[INFO] epoch 1\n")
    assert not run_dir.remove_if_unstarted(started) and started.exists()
    # A log that was empty when the refused job began holds only that job's lines.
    refused = tmp_path / "c"
    (refused / ".hydra").mkdir(parents=True)
    (refused / "train.log").write_text("[WARNING] fc is re-initialized for fine-tuning\n")
    assert run_dir.remove_if_unstarted(refused, own_log=True) and not refused.exists()
    (started / "checkpoints").mkdir()
    assert not run_dir.remove_if_unstarted(started, own_log=True) and started.exists()


def test_a_process_that_is_gone_is_not_alive():
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    time.sleep(0.05)
    assert run_dir.process_alive(done.pid) is False
    assert run_dir.process_alive(os.getpid()) is True
