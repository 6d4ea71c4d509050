"""Every schedule: linear warmup per step, then the shape its name promises."""

from __future__ import annotations

import pytest
import torch

from resnet_lab import schedulers
from resnet_lab.errors import ConfigError

STEPS_PER_EPOCH = 10
TOTAL = 100
PEAK = 0.4


def _lrs(factory, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK, momentum=0.9)
    scheduler = factory(optimizer, total_steps=TOTAL, steps_per_epoch=STEPS_PER_EPOCH, **options)
    lrs = []
    for _ in range(TOTAL):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("name", ["cosine", "constant", "onecycle"])
def test_warmup_rises_linearly_to_the_peak(name):
    lrs = _lrs(getattr(schedulers, name), warmup_epochs=2, warmup_start_factor=0.1)
    warm = lrs[:21]
    assert warm[0] == pytest.approx(0.1 * PEAK)
    assert max(lrs) == pytest.approx(PEAK)
    assert lrs.index(max(lrs)) == 20
    steps = [b - a for a, b in zip(warm, warm[1:])]
    assert all(s == pytest.approx(steps[0], rel=1e-6) for s in steps), "warmup must be linear"


def test_cosine_decays_to_the_floor():
    lrs = _lrs(schedulers.cosine, warmup_epochs=1, min_lr_ratio=0.1)
    assert lrs[10] == pytest.approx(PEAK)
    assert lrs[55] == pytest.approx(0.1 * PEAK + 0.9 * PEAK * 0.5, rel=0.05)
    assert lrs[-1] == pytest.approx(0.1 * PEAK, rel=0.05)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:]))


def test_multistep_drops_at_epoch_and_step_milestones():
    lrs = _lrs(schedulers.multistep, milestones=[3, 6], gamma=0.1)
    assert lrs[29] == pytest.approx(PEAK) and lrs[30] == pytest.approx(PEAK * 0.1)
    assert lrs[60] == pytest.approx(PEAK * 0.01)
    lrs = _lrs(schedulers.multistep, milestones=[50], milestone_unit="step", warmup_epochs=1)
    assert lrs[49] == pytest.approx(PEAK) and lrs[50] == pytest.approx(PEAK * 0.1)


def test_onecycle_falls_linearly_to_the_end():
    lrs = _lrs(schedulers.onecycle, warmup_epochs=3, final_lr_ratio=0.0)
    assert lrs.index(max(lrs)) == 30
    assert lrs[-1] < 0.02 * PEAK
    falls = [a - b for a, b in zip(lrs[31:], lrs[32:])]
    assert max(falls) == pytest.approx(min(falls), rel=1e-3)


@pytest.mark.parametrize(
    ("factory", "options", "message"),
    [
        (schedulers.cosine, {"warmup_epochs": 20}, "not shorter than the whole run"),
        (schedulers.cosine, {"warmup_epochs": -1}, "must be >= 0"),
        (schedulers.multistep, {"milestones": [1], "warmup_epochs": 2}, "must all fall after"),
        (schedulers.multistep, {"milestones": [1], "milestone_unit": "week"}, "'epoch' or 'step'"),
    ],
)
def test_impossible_schedules_are_refused(factory, options, message):
    with pytest.raises(ConfigError, match=message):
        _lrs(factory, **options)


@pytest.mark.parametrize("total_steps", [1, 2, 5])
def test_onecycle_survives_runs_of_a_few_steps_and_no_warmup(total_steps):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    scheduler = schedulers.onecycle(optimizer, total_steps=total_steps, steps_per_epoch=1)
    used = []
    for _ in range(total_steps):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert all(0 < lr <= PEAK for lr in used)
