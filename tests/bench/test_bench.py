"""`python -m resnet_lab.bench`: its JSON, its checks, and that both paths do the same work."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from torchmetrics import Metric

from resnet_lab.bench.__main__ import main
from resnet_lab.bench.data_paths import compare_data_paths
from resnet_lab.bench.lightning_path import (
    LightningPath,
)
from resnet_lab.bench.lightning_vs_plain import run_model_sections
from resnet_lab.bench.models_vs_torchvision import compare_with_torchvision
from resnet_lab.bench.plain_loop import PlainLoop
from resnet_lab.bench.results import Measurement, Ratio
from resnet_lab.bench.settings import BenchSettings
from resnet_lab.bench.step_profile import profile_training
from resnet_lab.bench.timing import PeakMemory
from resnet_lab.bench.training_config import (
    KEPT_CALLBACKS,
    SWITCHED_OFF_CALLBACKS,
    kept_callbacks,
    module_options,
    optimizer_factory,
    scheduler_factory,
    trainer_options,
)
from resnet_lab.bench.workload import (
    build_net,
    prepare,
)
from tests.helpers import REPO, compose_config

TINY = dict(image_size=16, batch_size=8, warmup=1, steps=3, repeats=2)

# Runs the command with wandb unimportable, as on a GPU machine that has torch, torchvision,
# lightning and torchmetrics plus the hydra-core and omegaconf wheels carried to it.
WITHOUT_WANDB = (
    "import runpy, sys\n"
    "sys.modules['wandb'] = None\n"
    "sys.argv = ['resnet_lab.bench', *sys.argv[1:]]\n"
    "runpy.run_module('resnet_lab.bench', run_name='__main__')\n"
)


@pytest.fixture(autouse=True)
def one_thread():
    """These tests check what is computed, not how fast: one thread keeps them quick on a
    shared machine, where two threads per process wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_command_prints_the_table_and_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--model", "resnet20", "--image-size", "16", "--batch-size", "8", "--steps", "3",
            "--warmup", "1", "--repeats", "2", "--threads", "1", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", WITHOUT_WANDB, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resnet20 lightning / resnet20 plain" in done.stdout
    assert "device: cpu" in done.stdout

    report = json.loads(out.read_text())
    assert report["schema_version"] == 1
    assert report["settings"]["batch_size"] == 8 and report["settings"]["sections"] == ["train", "infer"]
    machine = report["machine"]
    assert machine["cpu_cores"] >= 1 and machine["torch_threads"] == 1
    assert machine["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    assert machine["packages"]["lightning"]
    measurements = {m["name"]: m for m in report["measurements"]}
    assert set(measurements) == {"resnet20 lightning", "resnet20 plain", "resnet20 inference"}
    for m in measurements.values():
        rate = m["images_per_s"]
        assert len(rate["samples"]) == 2 and rate["min"] <= rate["median"] <= rate["max"]
        assert rate["min"] > 0
    # The paths start from the same weights and take the same steps: same losses.
    assert measurements["resnet20 lightning"]["details"]["largest_loss_difference_vs_plain"] < 1e-4
    ratios = {r["basis"]: r for r in report["ratios"]}
    assert set(ratios) == {"wall", "cpu_time"}
    for basis, key in (("wall", "images_per_s"), ("cpu_time", "images_per_cpu_s")):
        ratio = ratios[basis]
        assert (ratio["numerator"], ratio["denominator"]) == ("resnet20 lightning", "resnet20 plain")
        lightning, plain = (measurements[n][key]["samples"] for n in ("resnet20 lightning", "resnet20 plain"))
        assert ratio["samples"] == pytest.approx([a / b for a, b in zip(lightning, plain)])
    wall = ratios["wall"]
    assert wall["target"] == 0.97 and wall["meets_target"] == (wall["value"] >= 0.97)


def test_lightning_path_and_plain_loop_take_the_same_steps():
    settings = BenchSettings(deterministic=True, **TINY)
    torch.use_deterministic_algorithms(True)
    try:
        net = build_net("resnet20", settings)
        initial = copy.deepcopy(net.state_dict())
        plain = PlainLoop(prepare(copy.deepcopy(net), settings), settings)
        smoothed = PlainLoop(prepare(copy.deepcopy(net), settings), settings, label_smoothing=0.1)
        ours = LightningPath(net, settings)
        theirs = plain.run(warmup=1, steps=3)
        mine = ours.run(warmup=1, steps=3)
        other = smoothed.run(warmup=1, steps=3)
    finally:
        torch.use_deterministic_algorithms(False)
    assert len(mine.losses) == len(theirs.losses) == 4
    assert mine.losses == pytest.approx(theirs.losses, abs=1e-5)
    assert mine.losses[-1] < mine.losses[0]  # they train
    # The comparison can tell a different step apart: label smoothing changes every loss.
    assert all(abs(a - b) > 1e-3 for a, b in zip(other.losses, theirs.losses))
    trained = ours.net.state_dict()
    for name, value in plain.net.state_dict().items():
        assert torch.allclose(trained[name], value, atol=1e-5), name
    assert not torch.equal(trained["fc.weight"], initial["fc.weight"])


def test_progress_bar_is_timed_as_a_path_of_its_own():
    settings = BenchSettings(sections=("train",), progress_bar=True, **TINY)
    result = run_model_sections(settings)
    names = [m.name for m in result.measurements]
    assert names == ["resnet20 lightning", "resnet20 lightning + progress bar", "resnet20 plain"]
    with_bar = result.measurements[1]
    assert with_bar.details["largest_loss_difference_vs_plain"] < 1e-4
    wall = [r for r in result.ratios if r.basis == "wall"]
    assert [(r.numerator, r.denominator) for r in wall] == [
        ("resnet20 lightning", "resnet20 plain"),
        ("resnet20 lightning + progress bar", "resnet20 plain"),
    ]


def test_training_step_logs_nothing_that_waits_for_the_gpu():
    """Per step, a logged Python float becomes torch.tensor(value, device=cuda), a blocking
    copy that waits for the GPU, and torchmetrics' argument checks call torch.unique on the
    targets, which does too; either would stall the GPU pipeline every step."""
    settings = BenchSettings(**TINY)
    ours = LightningPath(build_net("resnet20", settings), settings)
    logged = {}
    log = ours.module.log

    def spy(name, value, *args, **kwargs):
        logged[name] = value
        return log(name, value, *args, **kwargs)

    ours.module.log = spy
    ours.run(warmup=1, steps=1)
    per_step = ("train/loss", "train/lr", "train/acc_top1", "train/acc_top5")
    for name in per_step:
        assert isinstance(logged[name], (torch.Tensor, Metric)), (name, type(logged[name]))
    for metrics in (ours.module.train_metrics, ours.module.val_metrics, ours.module.test_metrics):
        assert all(metric.validate_args is False for metric in metrics.values())


def test_bench_trains_with_the_composed_training_config():
    cfg = compose_config()
    factory = optimizer_factory(cfg.lr_base_batch_size * 2)
    assert factory.func is torch.optim.SGD
    assert factory.keywords["lr"] == pytest.approx(cfg.optimizer.lr * 2)  # scaled as train.py scales it
    assert {k: v for k, v in factory.keywords.items() if k != "lr"} == {
        k: v for k, v in cfg.optimizer.items() if not k.startswith("_") and k != "lr"}
    assert scheduler_factory().func.__name__ == cfg.scheduler._target_.rsplit(".", 1)[1]
    options = trainer_options()
    for key in ("log_every_n_steps", "gradient_clip_val", "accumulate_grad_batches", "num_nodes"):
        assert options[key] == cfg.trainer[key], key
    assert module_options() == {"label_smoothing": cfg.module.label_smoothing,
                                "decay_norm_and_bias": cfg.module.decay_norm_and_bias}
    # Every default callback is either kept in our path or switched off as file/log output.
    assert set(cfg.callbacks) == {*KEPT_CALLBACKS, *SWITCHED_OFF_CALLBACKS}
    kept = kept_callbacks("/tmp/bench-root")
    assert [type(c).__name__ for c in kept] == ["RandomState", "DivergenceDetector", "Preemption"]
    assert kept[1].check_every_n_steps == cfg.trainer.log_every_n_steps
    assert cfg.model.name == BenchSettings().model


def test_profile_and_json_are_not_combined(tmp_path, capsys):
    assert main(["--profile", str(tmp_path / "p"), "--json", str(tmp_path / "b.json")]) == 2
    assert "give one of the two" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_an_existing_json_file_is_kept(tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text("earlier results")
    assert main(["--json", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_text() == "earlier results"


def test_our_resnet18_computes_torchvisions_function_and_is_timed_against_it():
    settings = BenchSettings(sections=("torchvision",), compare_models=("resnet18",),
                             image_size=32, batch_size=2, warmup=1, steps=1, repeats=2)
    result = compare_with_torchvision(settings)
    ours, theirs = result.measurements
    assert (ours.name, theirs.name) == ("resnet18 ours", "resnet18 torchvision")
    assert ours.details["parameters"] == theirs.details["parameters"] == 11_181_642
    assert ours.details["largest_output_difference_vs_torchvision"] < 1e-4
    wall, cpu_time = result.ratios
    assert (wall.basis, cpu_time.basis) == ("wall", "cpu_time")
    assert len(wall.samples) == 2 and wall.target == 1.0


def test_data_section_times_both_data_paths_with_the_data_packages_benchmark():
    settings = BenchSettings(sections=("data",), image_size=16, batch_size=8, warmup=1, steps=2, repeats=2)
    result = compare_data_paths(settings)
    resident, loader = result.measurements
    assert (resident.name, loader.name) == ("device-resident", "DataLoader")
    for measurement in (resident, loader):
        assert len(measurement.images_per_s["samples"]) == 2 and measurement.images_per_s["min"] > 0
    assert "pad=4" in resident.details["augment"] and resident.details["dataloader_workers"] >= 0
    (ratio,) = result.ratios
    assert ratio.samples == pytest.approx(
        [a / b for a, b in zip(resident.images_per_s["samples"], loader.images_per_s["samples"])]
    )


def test_profile_writes_operator_tables_traces_and_python_time_by_package(tmp_path):
    settings = BenchSettings(image_size=16, batch_size=8, warmup=1, steps=1)
    summary = profile_training(settings, tmp_path / "profile")
    for path in ("lightning", "plain"):
        assert "aten::" in (tmp_path / "profile" / f"{path}_operators.txt").read_text()
        assert "traceEvents" in (tmp_path / "profile" / f"{path}_trace.json").read_text()
        assert "function calls" in (tmp_path / "profile" / f"{path}_python.txt").read_text()
    assert (tmp_path / "profile" / "summary.txt").read_text().strip() == summary
    lightning_row = next(line for line in summary.splitlines() if line.strip().startswith("lightning "))
    ours, plain = (float(x) for x in lightning_row.split()[1::2])
    assert ours > 0 and plain == 0  # Lightning's own code runs in our path only


def test_ratio_is_the_median_of_paired_blocks():
    def measured(name, samples):
        rates = {"median": 0, "min": 0, "max": 0, "samples": samples}
        return Measurement("train", name, rates, rates, None, None)

    # Blocks 2 and 3 of both paths ran in a slow spell: pairing cancels it (1.01), a ratio
    # of the medians would not (50 / 100).
    ratio = Ratio.paired("train", measured("a", [101.0, 50.0, 40.0]), measured("b", [100.0, 49.0, 41.0]))
    assert ratio.samples == pytest.approx([1.01, 50 / 49, 40 / 41])
    assert ratio.value == pytest.approx(1.01)


def test_peak_memory_sees_an_allocation_inside_the_window():
    memory = PeakMemory(torch.device("cpu"))
    if memory.kind is None:
        pytest.skip("the process's peak resident set size cannot be reset here (not Linux)")
    memory.reset()
    before = memory.read_mb()
    block = torch.ones(64, 2**20 // 4)  # 64 MiB
    block.add_(1)
    assert memory.read_mb() >= before + 60
    del block
