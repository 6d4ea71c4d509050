"""`python -m resnet_lab.runs plot`: a multirun directory stands for its jobs, the default figure
is He et al.'s Figure 6 (training error dashed, validation error solid, plain and residual nets
side by side), legends stay inside the image, epochs are whole numbers.

Run directories are written with the real writers (tests/helpers/runs.py).
"""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure
from PIL import Image

from resnet_lab.runs.__main__ import main
from tests.helpers.runs import degradation_sweep, write_job


@pytest.fixture
def drawn(monkeypatch):
    """The figures `plot` saves, kept for inspection."""
    figures: list[Figure] = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def test_a_multirun_directory_plots_all_its_jobs_as_figure_6(tmp_path, drawn):
    root = tmp_path / "outputs"
    sweep = degradation_sweep(root)
    output = tmp_path / "fig6.png"
    assert main(["plot", str(sweep), "--root", str(root), "-o", str(output)]) == 0
    with Image.open(output) as image:
        assert image.format == "PNG"
    (figure,) = drawn
    plain, residual = [ax for ax in figure.axes if ax.get_visible()]
    assert "plain" in plain.get_title() and "residual" in residual.get_title()
    for ax, final_errors in ((plain, {1.0, 15.0}), (residual, {1.0, 0.5})):
        lines = ax.get_lines()
        dashed = [line for line in lines if line.get_linestyle() == "--"]
        solid = [line for line in lines if line.get_linestyle() == "-"]
        assert len(dashed) == len(solid) == 2  # two networks: training and validation error each
        # Error in percent, 100 x (1 - accuracy), over whole epochs 1..4.
        assert {round(float(line.get_ydata()[-1]), 6) for line in dashed} == final_errors
        assert all(list(line.get_xdata()) == [1, 2, 3, 4] for line in lines)
        assert all(line.get_linewidth() > dashed[0].get_linewidth() for line in solid)
    # The sweep by its id under --root, and one job of it by path, work too.
    assert main(["plot", sweep.name, "--root", str(root), "-o", str(output)]) == 0
    assert main(["plot", str(sweep / "1"), str(sweep / "3"), "--root", str(root), "-o", str(output)]) == 0
    legend_texts = [text.get_text() for text in drawn[-1].legends[0].get_texts()]
    assert legend_texts[:2] == ["plain56", "resnet56"]


def _inside(figure: Figure) -> None:
    renderer = figure.canvas.get_renderer()
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend())]
    assert legends
    bounds = figure.bbox
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert bounds.x0 <= box.x0 and box.x1 <= bounds.x1 and bounds.y0 <= box.y0 and box.y1 <= bounds.y1, (
            box, bounds)


def test_a_legend_of_many_differing_keys_stays_inside_the_image(tmp_path, drawn):
    root = tmp_path / "outputs"
    paths = []
    for index in range(3):
        config = {f"a_rather_long_section_name.with_a_long_key_{k}": f"value_{index}_{'x' * 30}" for k in range(6)}
        paths.append(write_job(root / "runs" / f"run{index}", config,
                               {"val/acc_top1": [0.5, 0.6 + 0.1 * index]}))
    output = tmp_path / "curves.png"
    assert main(["plot", *map(str, paths), "--root", str(root), "--metric", "val/acc_top1", "-o", str(output)]) == 0
    _inside(drawn[0])
    # The image's outermost pixels are background: nothing was cut at the edge.
    with Image.open(output) as image:
        pixels = image.convert("L")
        width, height = pixels.size
        edge = [pixels.getpixel((x, y)) for x in range(width) for y in (0, height - 1)]
        edge += [pixels.getpixel((x, y)) for y in range(height) for x in (0, width - 1)]
        assert min(edge) > 240


def test_a_one_epoch_run_gets_whole_epoch_ticks(tmp_path, drawn):
    root = tmp_path / "outputs"
    run = write_job(root / "runs" / "one", {"model": {"name": "resnet20"}},
                    {"train/acc_top1": [0.7], "val/acc_top1": [0.8]})
    for metric in ([], ["--metric", "val/acc_top1"]):
        assert main(["plot", str(run), "--root", str(root), *metric, "-o", str(tmp_path / "one.png")]) == 0
        ax = drawn[-1].axes[0]
        low, high = ax.get_xlim()
        ticks = [tick for tick in ax.get_xticks() if low <= tick <= high]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks


def test_metric_patterns_give_one_panel_per_matching_metric(tmp_path, drawn):
    root = tmp_path / "outputs"
    norms = {f"grad_norm/{stage}": [1.0, 0.5] for stage in ("stem", "layer1", "fc")}
    run = write_job(root / "runs" / "norms", {"model": {"name": "plain56"}}, {**norms, "val/acc_top1": [0.1, 0.2]})
    assert main(["plot", str(run), "--root", str(root), "--metric", "grad_norm/*", "-o", str(tmp_path / "n.png")]) == 0
    titles = [ax.get_title() for ax in drawn[0].axes if ax.get_visible()]
    assert titles == ["grad_norm/stem", "grad_norm/layer1", "grad_norm/fc"]  # in network order


def test_an_image_suffix_matplotlib_cannot_write_is_one_sentence_and_exit_2(tmp_path, capsys):
    root = tmp_path / "outputs"
    sweep = degradation_sweep(root)
    assert main(["plot", str(sweep), "--root", str(root), "-o", str(tmp_path / "x.xyz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "'.xyz'" in err and ".png" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.xyz").exists()
