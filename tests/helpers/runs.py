"""Run directories as training leaves them, written with the real writers: Lightning's CSV
logger for csv/metrics.csv, OmegaConf for the saved config, the run record's own writer."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from resnet_lab.run_dir import write_record


def write_job(path: Path, config: dict, curves: dict[str, list[float]], model_choice: str = "",
              record: dict[str, float] | None = None) -> Path:
    """A finished run directory: its config, one row per epoch of each metric, and a run
    record whose final metrics are the last rows (plus ``record``), 60 s of wall time."""
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), path / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"model": model_choice}}}}),
                   path / ".hydra" / "hydra.yaml")
    logger = CSVLogger(str(path), name="csv", version="")
    epochs = max(len(values) for values in curves.values())
    for epoch in range(epochs):
        row = {key: values[epoch] for key, values in curves.items() if epoch < len(values)}
        logger.log_metrics({**row, "epoch": epoch}, step=10 * epoch + 9)
    logger.save()
    final = {key: values[-1] for key, values in curves.items()}
    write_record(path, {"status": "finished", "metrics": {**final, **(record or {})},
                                           "epochs_done": epochs, "epochs_planned": epochs,
                                           "wall_time_s": 60.0})
    return path


def degradation_sweep(root: Path, epochs: int = 4) -> Path:
    """A multirun of plain-20/56 and ResNet-20/56 as `experiment=degradation_cpu` leaves it."""
    sweep = root / "multiruns" / "2026-01-01_00-00-00_abcdef"
    final = {"plain20": 0.99, "plain56": 0.85, "resnet20": 0.99, "resnet56": 0.995}
    for job, (model, acc) in enumerate(final.items()):
        train = [acc * (epoch + 1) / epochs for epoch in range(epochs)]
        write_job(sweep / str(job), {"model": {"name": model, "shortcut": None}, "optimizer": {"lr": 0.2}},
                  {"train/acc_top1": train, "val/acc_top1": [value - 0.02 for value in train]}, model,
                  record={"test/acc_top1": acc - 0.01})
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep
