"""``python -m resnet_lab.evaluate ckpt_path=<checkpoint> [data=<name>] [split=val]``.

Evaluates a checkpoint on the test (or validation) split: top-1 and top-5 accuracy, loss,
per-class accuracy and a confusion matrix (CSV and PNG). The model, and by default the data,
are the training run's own (its ``.hydra/config.yaml``; the checkpoint lives in
``<run>/checkpoints/``), so ``ckpt_path=<run>/checkpoints/best.ckpt`` reproduces the test
accuracy that run logged: the same network, data order, batch size and precision, and the
same torchmetrics. ``data=<name>`` evaluates on another data set with the same classes.

Results go to ``<run>/evaluations/<id>/`` (``metrics.json``, ``per_class.csv``,
``confusion_matrix.csv``, ``confusion_matrix.png``, ``evaluation.yaml``), or under
``paths.log_dir/evaluations/`` for a checkpoint outside any run directory. The checkpoint
is read with ``weights_only=True`` unless ``trust_checkpoint=true``. Every input is checked
before anything is written.
"""

from __future__ import annotations

import csv
import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from resnet_lab.checkpoint_files import load_checkpoint_file
from resnet_lab.configs import command, register_resolvers
from resnet_lab.data import RESOLVERS as DATA_RESOLVERS
from resnet_lab.errors import ConfigError, exit_on_user_error
from resnet_lab.inference import network_from_config
from resnet_lab.module import hard_labels
from resnet_lab.run_dir import EVALUATIONS_DIR, checkpoint_run_dir, read_record, stored_config
from resnet_lab.run_names import RESOLVERS, run_id

log = logging.getLogger("resnet_lab")

SPLITS = ("test", "val")
# Autocast dtype per Lightning precision name; others are refused with this list.
AUTOCAST = {"32-true": None, "32": None, "16-mixed": torch.float16, "16": torch.float16,
            "bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16}
# Above this many classes the confusion matrix PNG has no tick labels (unreadable anyway).
MAX_LABELLED_CLASSES = 40


def _check_inputs(cfg: DictConfig) -> tuple[Path, Path | None]:
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        raise ConfigError(
            "ckpt_path is required: python -m resnet_lab.evaluate ckpt_path=<run>/checkpoints/best.ckpt"
        )
    if cfg.get("split") not in SPLITS:
        raise ConfigError(f"split={cfg.get('split')!r} is not one of {', '.join(SPLITS)}.")
    path = Path(str(ckpt)).expanduser().resolve()
    load_checkpoint_file(path, trusted=bool(cfg.get("trust_checkpoint")), mmap=True, what="ckpt_path")
    run_dir = checkpoint_run_dir(path)
    if run_dir is None and (cfg.get("model") is None or cfg.get("data") is None):
        raise ConfigError(
            f"ckpt_path={str(ckpt)!r} is not inside a run directory, so the model and data it was "
            "trained with are unknown: pass them, e.g. model=resnet20 data=cifar10."
        )
    if run_dir is not None and cfg.get("data") is not None and cfg.get("model") is None:
        _check_data_fits_run(cfg, run_dir)
    return path, run_dir


def _check_data_fits_run(cfg: DictConfig, run_dir: Path) -> None:
    """Another data set must have the input channels and the classes the run's model has."""
    trained = OmegaConf.create(stored_config(run_dir))
    for key, what in (("in_chans", "input channels"), ("num_classes", "classes")):
        model_value = OmegaConf.select(trained, f"model.{key}", default=None, throw_on_resolution_failure=False)
        data_value = OmegaConf.select(cfg, f"data.{key}", default=None, throw_on_resolution_failure=False)
        if isinstance(model_value, int) and isinstance(data_value, int) and model_value != data_value:
            raise ConfigError(
                f"the data given (data.{key}={data_value}) does not fit the model of run {run_dir}, "
                f"which was trained with {model_value} {what}. Evaluate on data with {model_value} "
                f"{what} (leave data= out for the run's own data)."
            )


def evaluation_dir(fallback: str, *, _root_: DictConfig) -> str:
    """Hydra resolver for the evaluation's ``hydra.run.dir``: checks the inputs first (exit 2
    on bad input, before anything is created), then ``<run>/evaluations/<id>`` when the
    checkpoint's run directory is writable, else ``fallback``."""
    import os

    with exit_on_user_error():
        _, run_dir = _check_inputs(_root_)
    if run_dir is not None and os.access(run_dir, os.W_OK):
        return str(run_dir / EVALUATIONS_DIR / run_id("evaluation"))
    return fallback


register_resolvers([*RESOLVERS, *DATA_RESOLVERS, ("evaluation_dir", evaluation_dir, False)])


def evaluation_config(cfg: DictConfig, run_dir: Path | None) -> DictConfig:
    """The training run's config with this command's ``model``/``data`` choices on top."""
    combined = OmegaConf.create(stored_config(run_dir)) if run_dir is not None else OmegaConf.create({})
    for key in ("model", "data"):
        if cfg.get(key) is not None:
            combined[key] = cfg[key]
    if "seed" not in combined:
        combined.seed = cfg.seed
    if cfg.get("data_dir"):
        OmegaConf.update(combined, "paths.data_dir", cfg.data_dir, force_add=True)
    elif "paths" not in combined:
        combined.paths = cfg.paths
    if cfg.get("batch_size"):
        combined.data.eval_batch_size = int(cfg.batch_size)
    if "trainer" not in combined:
        combined.trainer = {"precision": "32-true"}
    return combined


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"accelerator={name} but no CUDA device is visible; use accelerator=cpu.")
    return torch.device("cuda" if name in ("gpu", "cuda") else name)


@torch.inference_mode()
def evaluate_network(net, loader, datamodule, num_classes: int, device, autocast_dtype) -> dict[str, Any]:
    from torchmetrics import MeanMetric
    from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

    top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro").to(device)
    top5 = MulticlassAccuracy(num_classes, top_k=5, average="micro").to(device) if num_classes >= 5 else None
    confusion = MulticlassConfusionMatrix(num_classes).to(device)
    loss = MeanMetric().to(device)
    net.eval().to(device)
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    for batch in loader:
        batch = datamodule.on_before_batch_transfer(batch, 0)
        batch = tuple(part.to(device) for part in batch)
        images, targets = datamodule.on_after_batch_transfer(batch, 0)
        if not len(images):  # every image of the batch failed to decode
            continue
        labels = hard_labels(targets)
        with amp:
            logits = net(images)
        loss.update(torch.nn.functional.cross_entropy(logits.float(), labels), weight=images.shape[0])
        for metric in (top1, top5, confusion):
            if metric is not None:
                metric.update(logits, labels)
    counts = confusion.compute().cpu()
    samples = counts.sum(dim=1)
    # Recall per class; None for a class with no samples in this split.
    per_class = [float(counts[i, i] / n) if n else None for i, n in enumerate(samples.tolist())]
    return {
        "acc_top1": float(top1.compute()),
        "acc_top5": float(top5.compute()) if top5 is not None else None,
        "loss": float(loss.compute()),
        "per_class": per_class,
        "confusion": counts.tolist(),
        "samples": int(samples.sum()),
    }


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(confusion, dtype=torch.float64)
    rows = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(classes)
    size = min(4 + 0.35 * n, 24)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(rows.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= MAX_LABELLED_CLASSES:
        axes.set_xticks(range(n), classes, rotation=90)
        axes.set_yticks(range(n), classes)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if confusion[i][j]:
                        axes.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=7,
                                  color="white" if rows[i, j] > 0.5 else "black")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _logged_test_accuracy(run_dir: Path | None, ckpt: Path, ema: bool = False) -> float | None:
    """The test/acc_top1 (of the EMA: test/acc_top1_ema) the training run logged, if ``ckpt``
    is the checkpoint it tested."""
    if run_dir is None or ckpt.name != "best.ckpt":
        return None
    try:
        record = read_record(run_dir)
    except ConfigError:
        return None
    value = record.get("metrics", {}).get("test/acc_top1_ema" if ema else "test/acc_top1")
    return float(value) if value is not None else None


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt, run_dir = _check_inputs(cfg)
    checkpoint = load_checkpoint_file(ckpt, trusted=bool(cfg.trust_checkpoint), what="ckpt_path")
    combined = evaluation_config(cfg, run_dir)
    precision = str(cfg.precision or OmegaConf.select(combined, "trainer.precision", default="32-true"))
    if precision not in AUTOCAST:
        raise ConfigError(f"precision={precision!r}: evaluate supports {', '.join(AUTOCAST)}.")
    datamodule = instantiate(combined.data)
    net = network_from_config(combined.model, checkpoint, f"ckpt_path {str(ckpt)!r}", ema=bool(cfg.ema))
    del checkpoint
    datamodule.prepare_data()
    datamodule.setup("test" if cfg.split == "test" else "validate")
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()
    device = _device(str(cfg.accelerator))
    results = evaluate_network(net, loader, datamodule, datamodule.num_classes, device, AUTOCAST[precision])
    classes = [str(name) for name in getattr(datamodule, "classes", range(datamodule.num_classes))]
    logged = _logged_test_accuracy(run_dir, ckpt, bool(cfg.ema)) if cfg.split == "test" and cfg.get("data") is None else None
    summary = {
        "checkpoint": str(ckpt),
        "run_dir": str(run_dir) if run_dir is not None else None,
        "data": OmegaConf.select(combined, "data._target_"),
        "split": cfg.split,
        "samples": results["samples"],
        "precision": precision,
        "ema": bool(cfg.ema),
        f"{cfg.split}/acc_top1": results["acc_top1"],
        f"{cfg.split}/acc_top5": results["acc_top5"],
        f"{cfg.split}/loss": results["loss"],
        "logged_test/acc_top1": logged,
        "per_class_acc": dict(zip(classes, results["per_class"])),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(output_dir / "per_class.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class", "accuracy", "samples"])
        for name, accuracy, row in zip(classes, results["per_class"], results["confusion"]):
            writer.writerow([name, accuracy, sum(row)])
    with open(output_dir / "confusion_matrix.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, results["confusion"]):
            writer.writerow([name, *row])
    plot_confusion(results["confusion"], classes, output_dir / "confusion_matrix.png",
                   f"{ckpt.parent.parent.name}/{ckpt.name} on {cfg.split}")
    OmegaConf.save(combined, output_dir / "evaluation.yaml")
    log.info("%s", _report(summary, results, classes, output_dir))
    return summary


def _report(summary: dict[str, Any], results: dict[str, Any], classes: list[str], output_dir: Path) -> str:
    split = summary["split"]
    weights = " (EMA weights)" if summary["ema"] else ""
    lines = [f"{summary['checkpoint']}{weights} on {split} ({summary['samples']} images):",
             f"  {split}/acc_top1: {results['acc_top1']:.4f}"]
    if results["acc_top5"] is not None:
        lines.append(f"  {split}/acc_top5: {results['acc_top5']:.4f}")
    lines.append(f"  {split}/loss: {results['loss']:.4f}")
    logged = summary["logged_test/acc_top1"]
    if logged is not None:
        lines.append(f"  the training run logged test/acc_top1 {logged:.6f} (difference {results['acc_top1'] - logged:+.2g})")
    worst = sorted((value, name) for value, name in zip(results["per_class"], classes) if value is not None)[:5]
    lines.append("  lowest per-class accuracy: " + ", ".join(f"{name} {value:.3f}" for value, name in worst))
    lines.append(f"  results: {output_dir}")
    return "\n".join(lines)


@command("evaluate")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    from hydra.core.hydra_config import HydraConfig

    with exit_on_user_error():
        return evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
