"""The gradient norm of each stage of the network (stem, layer1.., fc), logged while training.

A diagnostic for the vanishing-gradient question of He et al. 2015 (section 4.1): is a deep
plain net hard to train because its early stages receive no gradient, or, as they argue, do
BatchNorm'd plain nets keep healthy gradients and degrade for another reason? The findings on
real data are in docs/RESULTS.md.

Cost. Each optimizer step adds one norm per parameter tensor into a running sum that stays on
the training device: on a GPU nothing is read back per step, so the host never waits for the
device. The means over the window (every ``log_every_n_steps`` optimizer steps, or the whole
epoch) come to the host in one copy when the window closes, and go to the loggers.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn

from resnet_lab.errors import ConfigError

PREFIX = "grad_norm/"
# The modules before the first stage; everything else is grouped by its top-level name.
STEM_MODULES = ("conv1", "bn1")


def stage_of(parameter_name: str) -> str:
    """``layer2.3.conv1.weight`` -> ``layer2``; the stem's convolution and norm -> ``stem``."""
    top = parameter_name.split(".", 1)[0]
    return "stem" if top in STEM_MODULES else top


def stage_parameters(net: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters of ``net`` by stage, in the order the network defines them."""
    stages: dict[str, list[nn.Parameter]] = {}
    for name, parameter in net.named_parameters():
        if parameter.requires_grad:
            stages.setdefault(stage_of(name), []).append(parameter)
    return stages


def stage_norms(stages: Sequence[Sequence[nn.Parameter]]) -> torch.Tensor | None:
    """L2 norms of the gradients of each group, and of all of them last: a tensor on the
    gradients' device (a group without gradients counts 0; None when no group has any). No
    host-device synchronization."""
    per_stage = []
    device = None
    for parameters in stages:
        grads = [p.grad.detach() for p in parameters if p.grad is not None]
        if grads:
            device = grads[0].device
            per_stage.append(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads])))
        else:
            per_stage.append(None)
    if device is None:
        return None
    if any(norm is None for norm in per_stage):
        zero = torch.zeros((), device=device)
        per_stage = [zero if norm is None else norm for norm in per_stage]
    norms = torch.stack(per_stage)
    return torch.cat([norms, torch.linalg.vector_norm(norms).reshape(1)])


class GradNorms(L.Callback):
    """Logs ``grad_norm/<stage>`` (stem, layer1, ..., fc) and ``grad_norm/total``.

    Each value is the L2 norm of the stage's gradient (all its parameters together) as the
    optimizer receives it: after gradient accumulation and AMP unscaling, before clipping,
    averaged over the optimizer steps of the window.

    Args:
        log_every_n_steps: the window in optimizer steps; None: one value per epoch. Windows
            count steps from the start of training, as Lightning's own step logging does.
    """

    def __init__(self, log_every_n_steps: int | None = 50) -> None:
        if log_every_n_steps is not None and (
            not isinstance(log_every_n_steps, int) or isinstance(log_every_n_steps, bool)
            or log_every_n_steps < 1
        ):
            raise ConfigError(
                "callbacks.grad_norms.log_every_n_steps must be a positive integer or null (one "
                f"value per epoch), got {log_every_n_steps!r}."
            )
        self.log_every_n_steps = log_every_n_steps
        self.names: list[str] = []
        self._groups: list[list[nn.Parameter]] = []
        self._sum: torch.Tensor | None = None
        self._count = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The network without the LightningModule around it (ImageClassifier.net), so that
        # the names are the network's own: conv1, layer1, ..., fc.
        net = getattr(pl_module, "net", pl_module)
        stages = stage_parameters(net)
        self.names = [*stages, "total"]
        self._groups = list(stages.values())
        self._sum, self._count = None, 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if not self._groups:
            return
        norms = stage_norms(self._groups)
        if norms is None:
            return
        self._sum = norms if self._sum is None else self._sum + norms
        self._count += 1
        step = trainer.global_step  # of this step, counted from 0: Lightning's step for its row
        if self.log_every_n_steps is not None and (step + 1) % self.log_every_n_steps == 0:
            self._write(trainer, step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.log_every_n_steps is None:
            self._write(trainer, trainer.global_step - 1)

    def _write(self, trainer: L.Trainer, step: int) -> None:
        total, count = self._sum, self._count
        self._sum, self._count = None, 0
        if total is None or not trainer.is_global_zero or not trainer.loggers:
            return
        means = (total / count).tolist()  # the window's one device-to-host copy
        metrics: dict[str, float] = {PREFIX + name: value for name, value in zip(self.names, means)}
        # As Lightning's own rows: the epoch lets the runs viewer place the point.
        metrics["epoch"] = trainer.current_epoch
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
