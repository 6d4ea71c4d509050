"""Keep a run's console to resnet_lab's own lines and real warnings.

Lightning logs a promotional tip, hardware availability and checkpoint restore lines at INFO
on every run (its "lightning.pytorch" logger, a handler of its own), and libraries emit
deprecation warnings about their own dependencies that a user cannot act on. resnet_lab's
own lines say what was chosen and restored; Lightning's warnings still show.
"""

from __future__ import annotations

import logging
import warnings


def lightning_chatter() -> None:
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(lightning|torchmetrics|torch)\b")
