"""TensorBoard: Lightning's logger, plus the HParams dashboard linking the config to chosen metrics
(Lightning only writes that dashboard with a placeholder ``hp_metric``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.fabric.utilities.logger import _sanitize_params as _sanitize_tensorboard_params
from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class TensorBoardLogger(_TensorBoardLogger):
    """Lightning's TensorBoard logger whose HParams dashboard shows ``hparams_metrics``.

    TensorBoard reads each metric's values from the scalars of the same tag, so nothing
    is logged for them up front (Lightning's ``default_hp_metric`` logs a -1 placeholder).
    """

    def __init__(self, save_dir: str, *, hparams_metrics: Sequence[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(save_dir, **kwargs)
        self.hparams_metrics = list(hparams_metrics)

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None) -> None:
        super().log_hyperparams(params, metrics=metrics, step=step)
        if metrics is not None or not self.hparams_metrics:
            return
        from torch.utils.tensorboard.summary import hparams

        flat = self._sanitize_params(_sanitize_tensorboard_params(_flatten_dict(_convert_params(params))))
        writer = self.experiment._get_file_writer()
        for summary in hparams(flat, dict.fromkeys(self.hparams_metrics, 0.0)):
            writer.add_summary(summary)
