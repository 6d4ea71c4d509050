"""Learning curves of several runs in one image, each run labelled by what sets it apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from resnet_lab.errors import UserError
from resnet_lab.runs.run import Run
from resnet_lab.runs.tables import differing_keys

MAX_LABEL_KEYS = 4


def run_labels(runs: Sequence[Run]) -> list[str]:
    """``key=value, ...`` over the config keys that differ; the run id where none do (or where
    two runs would get the same label)."""
    keys = differing_keys(runs)[:MAX_LABEL_KEYS] if len(runs) > 1 else []
    labels = [", ".join(f"{key}={run.flat_config.get(key)}" for key in keys) or run.id for run in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{run.id}: {label}" if label != run.id else label for run, label in zip(runs, labels)]
    return labels


def plot_runs(runs: Sequence[Run], metrics: Sequence[str], output: Path) -> list[str]:
    """Draw ``metrics`` (one panel each) for ``runs`` into ``output``; return warnings."""
    # The object-oriented API with the Agg canvas: no display needed, and no global backend
    # switch that would disturb a caller's own pyplot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    histories = [run.history for run in runs]
    for metric in metrics:
        if not any(metric in history for history in histories):
            available = sorted({key for history in histories for key in history})
            raise UserError(
                f"no run logged {metric!r}. Logged metrics: {', '.join(available) or 'none yet'}. "
                "Pick one with --metric, e.g. --metric val/acc_top1."
            )
    labels = run_labels(runs)
    figure = Figure(figsize=(7.5, 3.6 * len(metrics)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(metrics), 1, squeeze=False)[:, 0]
    warnings = []
    for ax, metric in zip(axes, metrics):
        per_step = False
        for run, history, label in zip(runs, histories, labels):
            series = history.get(metric)
            if series is None or not series.values:
                warnings.append(f"{run.id} has no {metric}")
                continue
            if series.per_epoch():
                xs = series.epochs
            else:
                xs, per_step = series.steps, True
            ax.plot(xs, series.values, label=label, marker="o" if len(xs) <= 30 else None, markersize=3)
        ax.set_title(metric)
        ax.set_xlabel("step" if per_step else "epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    return warnings
