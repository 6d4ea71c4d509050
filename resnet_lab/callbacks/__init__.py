"""Lightning callbacks of resnet_lab's own (Lightning's are used directly from the configs);
each has its config file in conf/callbacks/."""

from resnet_lab.callbacks.checkpoints import LastCheckpoint
from resnet_lab.callbacks.divergence import DivergenceDetector, TrainingDivergedError
from resnet_lab.callbacks.ema import EMA
from resnet_lab.callbacks.epoch_summary import EpochSummary
from resnet_lab.callbacks.grad_norms import GradNorms
from resnet_lab.callbacks.preemption import Preemption
from resnet_lab.callbacks.random_state import RandomState
from resnet_lab.callbacks.run_record import RunRecord

__all__ = [
    "EMA",
    "DivergenceDetector",
    "EpochSummary",
    "GradNorms",
    "LastCheckpoint",
    "Preemption",
    "RandomState",
    "RunRecord",
    "TrainingDivergedError",
]
