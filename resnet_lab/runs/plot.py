"""Learning curves of runs as one image.

Without metrics: training error (dashed) and validation error (solid) per epoch, in the style
of He et al. 2015, Figure 6, with plain and residual networks in panels side by side when the
runs hold both. With metrics (shell patterns allowed, e.g. ``grad_norm/*``): one panel per
metric. Each run is labelled by the config keys that set it apart.
"""

from __future__ import annotations

import fnmatch
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

from resnet_lab.errors import UserError
from resnet_lab.run_dir import is_run_dir
from resnet_lab.runs.discovery import iter_jobs, resolve_dir, resolve_run
from resnet_lab.runs.run import Run
from resnet_lab.runs.tables import differing_keys

MAX_LABEL_KEYS = 4
LABEL_WIDTH = 60          # characters per legend line; longer labels wrap
PANEL_SIZE = (5.0, 3.4)   # inches per panel
TRAIN_ACC, VAL_ACC = "train/acc_top1", "val/acc_top1"
FAMILY_TITLES = {"plain": "plain networks", "residual": "residual networks (ResNet)"}


def _image_formats() -> dict[str, str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg(Figure()).get_supported_filetypes()


def check_output(output: Path) -> Path:
    """Refuse an image name whose suffix matplotlib cannot write, before any work."""
    output = Path(output)
    formats = _image_formats()
    if output.suffix.lower().lstrip(".") not in formats:
        common = [name for name in ("png", "pdf", "svg") if name in formats]
        others = sorted(set(formats) - set(common))
        what = f"{output.suffix!r} image format" if output.suffix else "format for a name without a suffix"
        raise UserError(
            f"cannot write {str(output)!r}: matplotlib has no {what}; end the file name in "
            f".{', .'.join(common)} (or .{', .'.join(others)})."
        )
    return output


def runs_of(arguments: Sequence[str], root: Path) -> list[Run]:
    """RUN arguments, where a multirun directory (a path, or its id under ``root``) stands for
    all of its jobs, in job order."""
    runs: list[Run] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if not (path.is_dir() and is_run_dir(path)):
            try:
                sweep = resolve_dir(argument, root)
            except UserError:
                sweep = None
            jobs = list(iter_jobs(sweep, root)) if sweep is not None and not is_run_dir(sweep) else []
            if jobs:
                runs.extend(jobs)
                continue
        runs.append(resolve_run(argument, root))
    return runs


def run_labels(runs: Sequence[Run]) -> list[str]:
    """``key=value, ...`` over the config keys that differ (the model by its name alone); the
    run id where none do, or where two runs would get the same label."""
    keys = differing_keys(runs)[:MAX_LABEL_KEYS] if len(runs) > 1 else []
    labels = [
        ", ".join(str(run.flat_config.get(key)) if key == "model.name" else f"{key}={run.flat_config.get(key)}"
                  for key in keys) or run.id
        for run in runs
    ]
    if len(set(labels)) < len(labels):
        labels = [f"{run.id}: {label}" if label != run.id else label for run, label in zip(runs, labels)]
    return labels


def network_family(run: Run) -> str | None:
    """``plain`` or ``residual`` for a resnet_lab model, None when the config says neither."""
    model = run.config.get("model")
    if not isinstance(model, dict):
        return None
    shortcut = model.get("shortcut")
    if shortcut is None:  # a named model's own value: the registry's, where the default is True
        from resnet_lab.models.registry import MODELS

        entry = MODELS.get(str(model.get("name")))
        if entry is None:
            return None
        shortcut = entry.get("shortcut", True)
    return "residual" if shortcut else "plain"


def _network_order(metric: str) -> tuple:
    """Stages in the order of the network (stem, layer1, layer2, ..., fc, total), digits as
    numbers; other names alphabetically."""
    head, _, name = metric.rpartition("/")
    rank = {"stem": 0, "fc": 2, "total": 3}.get(name, 1)
    return (head, rank, [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)])


def _matching_metrics(patterns: Sequence[str], runs: Sequence[Run]) -> list[str]:
    logged = sorted({key for run in runs for key in run.history}, key=_network_order)
    metrics: list[str] = []
    for pattern in patterns:
        found = [key for key in logged if fnmatch.fnmatchcase(key, pattern)]
        if not found:
            raise UserError(
                f"no run logged {pattern!r}. Logged metrics: {', '.join(logged) or 'none yet'}. "
                "Pick one with --metric, e.g. --metric val/acc_top1 or --metric 'grad_norm/*'."
            )
        metrics.extend(key for key in found if key not in metrics)
    return metrics


def _figure(panels: int, share_y: bool = False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The object-oriented API with the Agg canvas: no display needed, and no global backend
    # switch that would disturb a caller's own pyplot.
    columns = 1 if panels == 1 else 2 if panels <= 4 else 3
    rows = -(-panels // columns)
    width = max(7.5, PANEL_SIZE[0] * columns)
    figure = Figure(figsize=(width, PANEL_SIZE[1] * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=share_y).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure, list(axes[:panels])


def _style_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    # Epochs and steps are whole numbers: a run of one epoch would get ticks at 0.96, 0.98, ...
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _legend(figure, entries: list[tuple], extra: Sequence[tuple] = ()) -> None:
    """One legend under the panels, inside the figure: labels wrap, columns fit the width."""
    if not entries:
        return
    handles = [handle for handle, _ in (*entries, *extra)]
    labels = [textwrap.fill(label, LABEL_WIDTH) for _, label in (*entries, *extra)]
    longest = max(len(line) for label in labels for line in label.splitlines())
    # About 8 legend characters per inch of figure at fontsize "small", plus the line sample.
    fit = int(figure.get_figwidth() * 8 // (longest + 6))
    columns = max(1, min(len(labels), fit))
    figure.legend(handles, labels, loc="outside lower center", fontsize="small", ncols=columns)
    # Room for the legend below the panels, rather than panels squeezed to make it: about
    # 0.2 inch per line of text at fontsize "small".
    lines = -(-len(labels) // columns) * max(label.count("\n") + 1 for label in labels)
    figure.set_figheight(figure.get_figheight() + 0.3 + 0.2 * lines)


def _xs(series) -> tuple[list[int], bool]:
    """Epochs for per-epoch metrics, else steps (and whether they are steps)."""
    return (series.epochs, False) if series.per_epoch() else (series.steps, True)


def metric_figure(runs: Sequence[Run], patterns: Sequence[str]):
    """One panel per metric matching ``patterns``; returns (figure, warnings)."""
    metrics = _matching_metrics(patterns, runs)
    labels = run_labels(runs)
    figure, axes = _figure(len(metrics))
    warnings: list[str] = []
    entries: dict[str, tuple] = {}
    for ax, metric in zip(axes, metrics):
        per_step = False
        values_seen: list[float] = []
        for index, (run, label) in enumerate(zip(runs, labels)):
            series = run.history.get(metric)
            if series is None or not series.values:
                warnings.append(f"{run.id} has no {metric}")
                continue
            xs, steps = _xs(series)
            per_step |= steps
            (line,) = ax.plot(xs, series.values, color=f"C{index % 10}",
                              marker="o" if len(xs) <= 30 else None, markersize=3)
            entries.setdefault(label, (line, label))
            values_seen.extend(series.values)
        _style_axes(ax, metric, "step" if per_step else "epoch", metric)
        if metric.startswith("grad_norm/") and values_seen and min(values_seen) > 0:
            ax.set_yscale("log")  # norms of different stages and nets span decades
    _legend(figure, list(entries.values()))
    return figure, warnings


def error_figure(runs: Sequence[Run]):
    """Training error (dashed) and validation error (solid) in percent, per epoch; plain and
    residual networks side by side when both are there. Returns (figure, warnings)."""
    from matplotlib.lines import Line2D

    if not any(VAL_ACC in run.history or TRAIN_ACC in run.history for run in runs):
        _matching_metrics([VAL_ACC], runs)  # raises, naming what was logged
    labels = run_labels(runs)
    families = [network_family(run) for run in runs]
    panels = [f for f in ("plain", "residual") if f in families]
    split = len(panels) == 2 and None not in families
    keys = panels if split else [None]
    figure, axes = _figure(len(keys), share_y=True)
    warnings: list[str] = []
    entries = []
    for ax, key in zip(axes, keys):
        for index, (run, label, family) in enumerate(zip(runs, labels, families)):
            if split and family != key:
                continue
            color = f"C{index % 10}"
            drawn = None
            for metric, style, width in ((TRAIN_ACC, "--", 1.0), (VAL_ACC, "-", 2.0)):
                series = run.history.get(metric)
                if series is None or not series.values:
                    warnings.append(f"{run.id} has no {metric}")
                    continue
                xs, _ = _xs(series)
                errors = [100.0 * (1.0 - value) for value in series.values]
                (drawn,) = ax.plot(xs, errors, style, color=color, linewidth=width)
            if drawn is not None:
                entries.append((Line2D([], [], color=color, linewidth=2.0), label))
        # The panels share the y axis: its label once, on the left.
        _style_axes(ax, FAMILY_TITLES[key] if key else "training and validation error", "epoch",
                    "error (%)" if ax is axes[0] else "")
        ax.set_ylim(bottom=0)
    style_key = (
        (Line2D([], [], color="0.3", linestyle="--", linewidth=1.0), "training error (dashed)"),
        (Line2D([], [], color="0.3", linestyle="-", linewidth=2.0), "validation error (solid)"),
    )
    _legend(figure, entries, style_key)
    return figure, warnings


def plot_runs(runs: Sequence[Run], metrics: Sequence[str] | None, output: Path) -> list[str]:
    """Draw ``runs`` into ``output``: the error curves, or ``metrics`` (one panel each).
    Returns warnings (runs that lack a metric)."""
    output = check_output(output)
    figure, warnings = metric_figure(runs, metrics) if metrics else error_figure(runs)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    return warnings
