"""Learning-rate schedules, stepped every optimizer step, each with an optional linear warmup.

Each function is the ``_target_`` of a ``_partial_`` config in ``conf/scheduler/``; the
LightningModule calls it with the optimizer and the run's step counts once the trainer
knows them. The schedules are torch's own; warmup is torch's ``LinearLR`` chained in front
with ``SequentialLR``. Durations are in epochs (fractions allowed) so that a recipe stays
right when the batch size changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    SequentialLR,
)

from resnet_lab.errors import ConfigError


def _warmup_steps(warmup_epochs: float, steps_per_epoch: float, total_steps: int) -> int:
    if warmup_epochs < 0:
        raise ConfigError(f"scheduler.warmup_epochs must be >= 0, got {warmup_epochs}.")
    steps = round(warmup_epochs * steps_per_epoch)
    if steps >= total_steps and steps > 0:
        raise ConfigError(
            f"scheduler.warmup_epochs={warmup_epochs} ({steps} steps) is not shorter than the "
            f"whole run ({total_steps} steps); lower it or train for longer."
        )
    return steps


def _with_warmup(
    optimizer: Optimizer, main: LRScheduler, warmup: int, start_factor: float
) -> LRScheduler:
    if warmup == 0:
        return main
    if not 0 < start_factor <= 1:
        raise ConfigError(
            f"scheduler.warmup_start_factor must lie in (0, 1], got {start_factor}."
        )
    ramp = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def cosine(
    optimizer: Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.01,
    min_lr_ratio: float = 0.0,
) -> LRScheduler:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` x the peak (Loshchilov & Hutter)."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    if not 0 <= min_lr_ratio <= 1:
        raise ConfigError(f"scheduler.min_lr_ratio must lie in [0, 1], got {min_lr_ratio}.")
    # CosineAnnealingLR takes one eta_min: with groups at different peaks (the classifier's,
    # module.head_lr_multiplier) the floor is min_lr_ratio x the first group's (the body's).
    eta_min = min_lr_ratio * optimizer.param_groups[0]["lr"]
    main = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=eta_min)
    return _with_warmup(optimizer, main, warmup, warmup_start_factor)


def multistep(
    optimizer: Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: float,
    milestones: Sequence[float],
    milestone_unit: str = "epoch",
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.01,
) -> LRScheduler:
    """Multiply the LR by ``gamma`` at each milestone (epochs, or steps as in He et al.)."""
    if milestone_unit not in ("epoch", "step"):
        raise ConfigError(
            f"scheduler.milestone_unit must be 'epoch' or 'step', got {milestone_unit!r}."
        )
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    scale = steps_per_epoch if milestone_unit == "epoch" else 1
    steps = sorted(round(m * scale) for m in milestones)
    if any(s <= warmup for s in steps):
        raise ConfigError(
            f"scheduler.milestones {list(milestones)} ({milestone_unit}s) must all fall after "
            f"the warmup ({warmup} steps)."
        )
    # SequentialLR restarts the main schedule's count when warmup ends.
    main = MultiStepLR(optimizer, milestones=[s - warmup for s in steps], gamma=gamma)
    return _with_warmup(optimizer, main, warmup, warmup_start_factor)


def onecycle(
    optimizer: Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.04,
    final_lr_ratio: float = 0.0,
    cycle_momentum: bool = False,
) -> LRScheduler:
    """Smith's one-cycle: linear rise to the peak over the warmup, linear fall to the end.

    OneCycleLR has the warmup built in (``pct_start``), so it is not chained: the peak is
    the optimizer's configured LR, reached after ``warmup_epochs``.
    """
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    if not 0 < warmup_start_factor <= 1:
        raise ConfigError(
            f"scheduler.warmup_start_factor must lie in (0, 1], got {warmup_start_factor}."
        )
    peak = [group["lr"] for group in optimizer.param_groups]
    final = max(final_lr_ratio, 1e-8)
    # OneCycleLR divides by the length of each phase, so each needs at least one step: the
    # peak comes at step 1 at the earliest, and a run shorter than that (fast_dev_run)
    # stops part-way through a cycle of three steps.
    peak_step = max(warmup, 1)
    cycle = max(total_steps, peak_step + 2)
    return OneCycleLR(
        optimizer,
        max_lr=peak,
        total_steps=cycle,
        # OneCycleLR peaks at step pct_start * total_steps - 1.
        pct_start=(peak_step + 1) / cycle,
        anneal_strategy="linear",
        div_factor=1 / warmup_start_factor,
        final_div_factor=warmup_start_factor / final,
        cycle_momentum=cycle_momentum,
    )


def constant(
    optimizer: Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.01,
) -> LRScheduler:
    """The configured LR throughout, after an optional linear warmup."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    return _with_warmup(optimizer, main, warmup, warmup_start_factor)
