"""Lightning callbacks of resnet_lab's own (Lightning's are used directly from the configs)."""

from resnet_lab.callbacks.epoch_summary import EpochSummary
from resnet_lab.callbacks.run_record import RunRecord, read_record

__all__ = ["EpochSummary", "RunRecord", "read_record"]
