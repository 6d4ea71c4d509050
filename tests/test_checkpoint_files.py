"""resnet_lab.checkpoint_files and checkpoint_io: atomic writes (a real writer process is
killed while it saves), safe reads, one clear error per unreadable file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from resnet_lab.checkpoint_files import (
    check_state_dict_fits,
    load_checkpoint_file,
    require_training_state,
)
from resnet_lab.checkpoint_files import save_checkpoint_file as save_atomic
from resnet_lab.checkpoint_io import AtomicCheckpointIO
from resnet_lab.errors import CheckpointError
from resnet_lab.models import build_model
from resnet_lab.run_dir import remove_stale_temporaries
from tests.helpers import REPO, TINY, Evil

# 4 batches of 32 per epoch; a checkpoint after every optimizer step.
STEPS = (*TINY, "trainer.max_epochs=2", "logger=none", "test=false",
         "callbacks.last_checkpoint.every_n_train_steps=1")







def test_a_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    save_atomic({"global_step": 1, "w": torch.ones(3)}, target)
    real_save = torch.save

    def save_half_then_die(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_die)
    # A full disk is one sentence (a CheckpointError: the job exits 2 with it), not a traceback.
    with pytest.raises(CheckpointError, match="could not save checkpoint .*: disk full. The previous checkpoint there is intact"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint_file(target)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_temporary_file_is_next_to_the_target_and_synced(tmp_path, monkeypatch):
    """Same directory means same file system, so os.replace is an atomic rename."""
    renames, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), real_replace(src, dst)))
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, target)
    ((source, destination),) = renames
    assert destination == target and source.parent == target.parent and source != target
    assert len(synced) >= 1  # the file (and, where the platform allows, the directory)
    assert load_checkpoint_file(target)["global_step"] == 3


WRITER = textwrap.dedent("""
    import sys, torch
    from resnet_lab.checkpoint_io import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), sys.argv[1]
    step = 0
    while True:
        step += 1
        io.save_checkpoint({"global_step": step, "w": torch.full((3_000_000,), float(step))}, path)
        print(step, flush=True)
""")


def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    """A writer saving 12 MB checkpoints in a loop is killed at random moments; each time
    the file on disk is a complete checkpoint, and the next start removes the dead writer's
    temporary file."""
    target = tmp_path / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    rng = random.Random()
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=env,
                                  stdout=subprocess.PIPE, text=True)
        writer.stdout.readline()  # at least one save completed
        time.sleep(rng.uniform(0.0, 0.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        checkpoint = load_checkpoint_file(target)
        assert torch.all(checkpoint["w"] == float(checkpoint["global_step"]))
        remove_stale_temporaries(tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    mine = tmp_path / f".last.ckpt.{os.uname().nodename}.{os.getppid()}.tmp"
    mine.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == []
    assert mine.exists()


# ------------------------------------------------------------------------- safe reads


def test_a_malicious_pickle_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil(f"touch {marker}")}, evil)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_file(evil, what="ckpt_path")
    message = str(error.value)
    assert "system" in message and "trust_checkpoint=true" in message
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()
    # The explicit flag does what it says: full unpickling (here: the file's command runs).
    load_checkpoint_file(evil, trusted=True)
    assert marker.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.ckpt", "does not exist"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "not a PyTorch checkpoint"),
        (lambda d: _truncated(d), "is truncated or damaged"),
    ],
    ids=["missing", "directory", "text file", "truncated"],
)
def test_unreadable_files_give_one_clear_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint_file(path, what="ckpt_path")
    assert str(path) in str(error.value)


def _truncated(directory: Path) -> Path:
    path = directory / "last.ckpt"
    torch.save({"global_step": 1, "w": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_weights_file_cannot_continue_training(tmp_path):
    with pytest.raises(CheckpointError, match="not a training checkpoint.*optimizer_states.*model.weights"):
        require_training_state({"state_dict": {}}, "ckpt_path 'w.pth'")


def test_another_architecture_lists_names_and_shapes():
    resnet20 = build_model("resnet20", num_classes=10).state_dict()
    resnet32 = build_model("resnet32", num_classes=100).state_dict()
    with pytest.raises(CheckpointError) as error:
        check_state_dict_fits(resnet20, resnet32, "ckpt_path 'x.ckpt'")
    message = str(error.value)
    assert "in the checkpoint, not in the model" in message
    assert "layer1.3.conv1.weight (16, 16, 3, 3)" in message  # resnet32 has 5 blocks per stage
    assert "fc.weight (100, 64) vs (10, 64)" in message
    check_state_dict_fits(resnet20, build_model("resnet20", num_classes=10).state_dict(), "same")
