"""MultirunReport: the figures and the results table a multirun leaves in its directory."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf
from PIL import Image

from resnet_lab.errors import UserError
from resnet_lab.runs.report import MultirunReport
from tests.helpers.runs import degradation_sweep


def test_the_report_draws_the_figures_and_tabulates_final_errors(tmp_path, caplog):
    sweep = degradation_sweep(tmp_path / "outputs")
    report = MultirunReport(figures={"errors": None, "grad_norms": ["grad_norm/*"]}, table="results.md")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with caplog.at_level(logging.INFO, logger="resnet_lab"):
        report.on_multirun_end(config)
    with Image.open(sweep / "errors.png") as image:
        assert image.format == "PNG" and image.size[0] > 800
    # The jobs logged no gradient norms: a warning, no file, and the rest of the report.
    assert not (sweep / "grad_norms.png").exists()
    assert "no run logged 'grad_norm/*'" in caplog.text
    rows = [line.split("|")[1:-1] for line in (sweep / "results.md").read_text().splitlines()[2:]]
    cells = {row[1].strip(): [cell.strip() for cell in row[2:]] for row in rows}
    # Final training / validation / test error in percent, epochs, wall time.
    assert cells["plain20"] == ["1.00", "3.00", "2.00", "4/4", "1m00s"]
    assert cells["plain56"] == ["15.00", "17.00", "16.00", "4/4", "1m00s"]
    assert cells["resnet56"][:3] == ["0.50", "2.50", "1.50"]
    assert [row[0].strip() for row in rows] == ["0", "1", "2", "3"]
    assert "results.md" in caplog.text and "| plain56 | 15.00 |" in caplog.text


def test_a_figure_format_matplotlib_cannot_write_is_refused_before_the_jobs_run():
    with pytest.raises(UserError, match="matplotlib has no '.xyz' image format"):
        MultirunReport(figures={"errors": None}, image_format="xyz")
