"""`seed` plus `trainer.deterministic=true` gives identical runs on the CPU.

Identical means bit for bit: the same weights after training and the same logged numbers.
The runs draw random numbers while training (MixUp), so the seed has to reach every
generator that is used; a second seed must change the result, or the test would prove
nothing.
"""

from __future__ import annotations

import json

import torch

from resnet_lab.train import train
from tests.helpers import TINY, compose_config

SEEDED = (*TINY, "trainer.max_epochs=2", "trainer.deterministic=true", "data.mixup_alpha=0.4", "logger=csv")


def _run(directory, *overrides):
    cfg = compose_config([*SEEDED, *overrides], run_dir=directory)
    train(cfg)
    record = json.loads((directory / "run.json").read_text())
    weights = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    log = [line.split(",") for line in (directory / "csv" / "metrics.csv").read_text().splitlines()]
    speed = log[0].index("train/images_per_sec")
    return record, weights, [row[:speed] + row[speed + 1:] for row in log]


def test_two_seeded_deterministic_runs_are_identical(tmp_path):
    first, weights_first, log_first = _run(tmp_path / "first", "seed=7")
    second, weights_second, log_second = _run(tmp_path / "second", "seed=7")
    for key in ("test/acc_top1", "test/acc_top5", "test/loss", "val/acc_top1", "val/loss", "train/acc_top1"):
        assert first["metrics"][key] == second["metrics"][key], key
    assert first["best"] == second["best"]
    assert log_first == log_second
    assert weights_first.keys() == weights_second.keys()
    assert all(torch.equal(weights_first[k], weights_second[k]) for k in weights_first)

    _, weights_other, log_other = _run(tmp_path / "other", "seed=8")
    assert log_other != log_first
    assert not all(torch.equal(weights_first[k], weights_other[k]) for k in weights_first)
