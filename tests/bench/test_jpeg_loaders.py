"""bench --sections jpeg: three loaders over one JPEG tree, both measures, side by side."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from resnet_lab.bench.__main__ import main
from resnet_lab.bench.jpeg_loaders import (
    CPU_COST_TARGET,
    THROUGHPUT_TARGET,
    compare_jpeg_loaders,
    image_files,
    write_photo_tree,
)
from resnet_lab.bench.settings import BenchSettings
from resnet_lab.errors import ConfigError

TINY = dict(sections=("jpeg",), image_size=32, batch_size=8, warmup=1, steps=2, repeats=2, jpeg_images=24, loader_workers=1)


def test_the_tree_is_cut_from_real_photos(tmp_path):
    root = write_photo_tree(tmp_path, 6)
    paths, labels = image_files(root)
    assert len(paths) == 6 and sorted(set(labels)) == [0, 1]
    with Image.open(paths[0]) as image:
        assert image.format == "JPEG" and 300 <= image.height <= 380 and 400 <= image.width <= 500
        assert len(set(image.convert("L").getdata())) > 100  # a photograph, not a flat fill


def test_the_section_times_three_loaders_two_ways_and_states_the_targets():
    threads = torch.get_num_threads()
    result = compare_jpeg_loaders(BenchSettings(**TINY))
    assert torch.get_num_threads() == threads  # the one-process blocks ran on one thread, then restored
    names = [m.name for m in result.measurements]
    assert names == [
        "ours, 1 process", "ten-line, 1 process", "decode-only, 1 process",
        "ours, 1 workers", "ten-line, 1 workers", "decode-only, 1 workers",
    ]
    for measurement in result.measurements:
        assert len(measurement.images_per_s["samples"]) == 2 and measurement.images_per_s["min"] > 0
    cost, throughput, to_decode = result.ratios
    assert (cost.basis, cost.target, cost.denominator) == ("cpu_time", CPU_COST_TARGET, "ten-line, 1 process")
    assert (throughput.basis, throughput.target, throughput.numerator) == ("wall", THROUGHPUT_TARGET, "ours, 1 workers")
    assert to_decode.denominator == "decode-only, 1 process" and to_decode.target is None
    assert any("CPU cost per delivered sample, ms" in note for note in result.notes)


def test_the_section_reads_a_given_tree_and_refuses_a_missing_one(tmp_path, capsys):
    write_photo_tree(tmp_path / "tree", 8)
    result = compare_jpeg_loaders(BenchSettings(**{**TINY, "repeats": 1, "data_root": str(tmp_path / "tree")}))
    assert result.measurements[0].details["images"] == 8
    assert main(["--sections", "jpeg", "--data-root", str(tmp_path / "nowhere")]) == 2
    assert "--data-root" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="fewer than one batch"):
        compare_jpeg_loaders(BenchSettings(**{**TINY, "repeats": 1, "batch_size": 16, "data_root": str(tmp_path / "tree")}))


def test_the_lever_rows_change_one_thing_each_and_are_compared_with_ours():
    result = compare_jpeg_loaders(BenchSettings(**{**TINY, "repeats": 1, "jpeg_levers": True, "photo_scale": 2}))
    names = [m.name for m in result.measurements][:6]
    assert names == [
        "ours, 1 process", "ours, fast DCT, 1 process", "ours, float in workers, 1 process",
        "torchvision tensors, 1 process", "ten-line, 1 process", "decode-only, 1 process",
    ]
    levers = [(r.numerator, r.denominator, r.basis) for r in result.ratios[3:]]
    assert ("ours, fast DCT, 1 process", "ours, 1 process", "cpu_time") in levers
    assert ("torchvision tensors, 1 workers", "ours, 1 workers", "wall") in levers
    assert "~900x680 crops" in result.measurements[0].details["data_root"]


def test_the_device_decode_row_runs_the_data_modules_device_decoder():
    """On by default on a GPU (nvJPEG); here on the CPU, where decode_jpeg is libjpeg-turbo."""
    assert not BenchSettings(**TINY).decode_on_device
    result = compare_jpeg_loaders(BenchSettings(**{**TINY, "repeats": 1, "jpeg_device_decode": True}))
    names = [m.name for m in result.measurements]
    assert "ours, decode on cpu, 1 process" in names and "ours, decode on cpu, 1 workers" in names
    assert ("ours, decode on cpu, 1 workers", "ours, 1 workers") in [(r.numerator, r.denominator) for r in result.ratios]
