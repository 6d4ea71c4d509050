"""The runs viewer (`python -m resnet_lab.runs`) on run directories made for real.

Fast tests write run files with the real writers (Lightning's CSV and TensorBoard loggers,
the run record's own writer) and real processes; the slow ones start real training runs
with the CLI: finished, failed, TensorBoard-only, a grid multirun, and one killed with
SIGKILL in the middle of training.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from resnet_lab.loggers import TensorBoardLogger
from resnet_lab.run_dir import RECORD_FILE as RECORD_NAME
from resnet_lab.run_dir import write_record
from resnet_lab.runs import Run, find_runs, resolve_run
from resnet_lab.runs.__main__ import main
from tests.helpers import TINY
from tests.helpers.runs import write_job

# ---------------------------------------------------------------------------------------
# Fast: reading the files


def _list(root: Path, *args: str, capsys) -> list[dict]:
    assert main(["list", "--root", str(root), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_history_reads_lightning_csv_even_while_a_row_is_being_written(tmp_path):
    run = tmp_path / "runs" / "r1"
    logger = CSVLogger(str(run), name="csv", version="")
    for epoch in range(3):
        for step in range(epoch * 4, epoch * 4 + 4):
            logger.log_metrics({"train/loss": 2.0 - 0.1 * step, "epoch": epoch}, step=step)
        logger.log_metrics({"val/acc_top1": 0.3 + 0.2 * epoch, "epoch": epoch}, step=epoch * 4 + 3)
    logger.save()
    path = run / "csv" / "metrics.csv"
    header = path.read_text().splitlines()[0].split(",")
    row = {"epoch": "2", "step": "11", "val/acc_top1": "0.9"}
    with path.open("a") as handle:
        # A resumed run logs the steps after its last checkpoint again: the later row wins.
        handle.write(",".join(row.get(key, "") for key in header) + "\n")
        handle.write("3,12,")  # a row cut short: the run is still writing
    history = Run(run).history
    assert history["val/acc_top1"].values == pytest.approx([0.3, 0.5, 0.9])
    assert history["val/acc_top1"].epochs == [1, 2, 3]
    assert history["val/acc_top1"].per_epoch()
    assert len(history["train/loss"].values) == 12 and not history["train/loss"].per_epoch()


def test_history_falls_back_to_tensorboard_events(tmp_path):
    run = tmp_path / "runs" / "r1"
    logger = TensorBoardLogger(str(run), name="tensorboard", version="")
    for epoch in range(2):
        logger.log_metrics({"val/acc_top1": 0.4 + 0.1 * epoch, "epoch": epoch}, step=10 * epoch + 9)
    logger.finalize("success")
    series = Run(run).history["val/acc_top1"]
    assert series.values == pytest.approx([0.4, 0.5])
    assert series.epochs == [1, 2] and series.steps == [9, 19]


def _record(run_dir: Path, **fields) -> Run:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": "running", "host": socket.gethostname(), "pid": os.getpid(),
              "command": " ".join(sys.argv), "updated": "2099-01-01T00:00:00+00:00", **fields}
    write_record(run_dir, record)
    return Run(run_dir)


def test_status_tells_a_dead_process_from_a_running_one(tmp_path):
    command = [sys.executable, "-c", "import time; time.sleep(600)", "resnet_lab", "data=synthetic"]
    process = subprocess.Popen(command)
    try:
        fields = {"pid": process.pid, "command": " ".join(command[1:])}
        assert _record(tmp_path / "alive", **fields).status == "running"
        # The same pid running something else (a reused pid) is not the run.
        assert _record(tmp_path / "reused", pid=process.pid, command="train.py other args").status == "interrupted"
    finally:
        process.kill()
        process.wait()
    assert _record(tmp_path / "killed", **fields).status == "interrupted"
    assert _record(tmp_path / "trained", status="trained", **fields).status == "interrupted"
    assert _record(tmp_path / "done", status="finished", **fields).status == "finished"
    assert _record(tmp_path / "failed", status="failed", exception="RuntimeError: x").status == "failed"
    pruned = _record(tmp_path / "pruned", status="failed", exception="TrialPruned: trial 3 pruned")
    assert pruned.status == "pruned"
    # Another machine's run: alive while its record is fresh, interrupted once stale.
    assert _record(tmp_path / "far", host="elsewhere", pid=1).status == "running"
    stale = _record(tmp_path / "far_stale", host="elsewhere", pid=1, updated="2000-01-01T00:00:00+00:00")
    assert stale.status == "interrupted"


def test_run_arguments_resolve_by_path_id_or_unique_prefix(tmp_path, capsys):
    root = tmp_path / "outputs"
    for name in ("runs/2024-01-01_10-00-00_aaaaaa", "runs/2024-01-01_10-00-00_bbbbbb", "multiruns/2024-02-02_x/0"):
        _record(root / name, status="finished")
    assert [run.id for run in find_runs(root)] == [
        "2024-02-02_x/0", "2024-01-01_10-00-00_aaaaaa", "2024-01-01_10-00-00_bbbbbb"]
    assert resolve_run("2024-01-01_10-00-00_b", root).path.name == "2024-01-01_10-00-00_bbbbbb"
    assert resolve_run("2024-02-02_x/0", root).id == "2024-02-02_x/0"
    assert resolve_run(str(root / "runs" / "2024-01-01_10-00-00_aaaaaa"), root).id.endswith("aaaaaa")
    assert main(["show", "2024-01-01", "--root", str(root)]) == 2
    assert "matches 2 runs" in capsys.readouterr().err
    assert main(["show", "nope", "--root", str(root)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_a_search_trial_is_listed_under_its_search(tmp_path):
    def run_with_choices(name: str, **choices) -> Run:
        run = _record(tmp_path / name, status="finished")
        (run.path / ".hydra").mkdir()
        (run.path / ".hydra" / "hydra.yaml").write_text(
            "hydra:\n  runtime:\n    choices:\n" + "".join(f"      {k}: {v}\n" for k, v in choices.items()))
        return Run(run.path)

    assert run_with_choices("trial", hparams_search="cifar10_resnet20", experiment="null",
                            model="resnet20").experiment == "hparams_search=cifar10_resnet20"
    assert run_with_choices("recipe", experiment="cifar10_fast", hparams_search="null").experiment == "cifar10_fast"
    assert run_with_choices("plain", model="resnet20").experiment == "-"


def test_list_on_an_empty_root_says_how_to_start(tmp_path, capsys):
    assert main(["list", "--root", str(tmp_path / "outputs")]) == 0
    assert "no runs under" in capsys.readouterr().out
    assert main(["list", "--root", str(tmp_path / "outputs"), "--status", "done"]) == 2
    assert "statuses are running, finished" in capsys.readouterr().err


def test_list_shows_the_task_name_and_tags_and_filters_by_tag(tmp_path, capsys):
    root = tmp_path / "outputs"
    curves = {"val/acc_top1": [0.5, 0.6]}
    write_job(root / "runs" / "a", {"task_name": "baseline_sweep", "tags": ["baseline", "cifar"],
                                    "model": {"name": "resnet20"}}, curves)
    write_job(root / "runs" / "b", {"task_name": "ablation", "tags": ["no-bn"],
                                    "model": {"name": "resnet20"}}, curves)
    rows = {row["id"]: row for row in _list(root, capsys=capsys)}
    assert rows["a"]["task"] == "baseline_sweep" and rows["a"]["tags"] == ["baseline", "cifar"]
    assert rows["b"]["task"] == "ablation" and rows["b"]["tags"] == ["no-bn"]
    assert [row["id"] for row in _list(root, "--tag", "cif*", capsys=capsys)] == ["a"]
    assert [row["id"] for row in _list(root, "--tag", "no-bn", capsys=capsys)] == ["b"]
    assert main(["list", "--root", str(root)]) == 0
    table = capsys.readouterr().out
    assert "baseline_sweep" in table and "baseline,cifar" in table


@pytest.mark.parametrize("argument", ["/missing/sweep", "runs/a"])
def test_sweep_of_a_missing_or_non_multirun_directory_is_one_sentence(tmp_path, capsys, argument):
    root = tmp_path / "outputs"
    write_job(root / "runs" / "a", {"model": {"name": "resnet20"}}, {"val/acc_top1": [0.5]})
    (root / "runs" / "a" / "csv").mkdir(exist_ok=True)  # a directory, but not a job of a multirun
    assert main(["sweep", argument if argument.startswith("/") else str(root / argument), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "outputs/multiruns/<id>" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------
# Slow: real runs started with the CLI


class FailInSecondEpoch(L.Callback):
    """Used by the `failed` run below (+callbacks.fail._target_=tests.test_runs....)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("a run that fails in its second epoch")


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    flags = [arg for arg in args if arg.startswith("-")]  # Hydra's flags go before overrides
    overrides = [arg for arg in args if not arg.startswith("-")]
    return subprocess.Popen([sys.executable, "-m", "resnet_lab", *flags, *TINY, *overrides], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_epoch(root: Path, marker: str, timeout: float = 400) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in (root / "outputs" / "runs").glob(f"*/{RECORD_NAME}"):
            text = record.read_text()
            if marker in (record.parent / ".hydra" / "overrides.yaml").read_text():
                if json.loads(text).get("epochs_done", 0) >= 1:
                    return record.parent
        time.sleep(0.5)
    raise TimeoutError("the run to kill never finished an epoch")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """outputs/ with: a 2-job grid (lr 0.05, 0.2), a TensorBoard-only run, a failed run and a
    run killed with SIGKILL after its first epoch. Started together to share the wait."""
    root = tmp_path_factory.mktemp("viewer")
    jobs = {
        "grid": _cli("-m", "trainer.max_epochs=2", "optimizer.lr=0.05,0.2", cwd=root),
        "tensorboard": _cli("trainer.max_epochs=2", "logger=tensorboard", "module.label_smoothing=0.1",
                            cwd=root),
        "failed": _cli("trainer.max_epochs=3", "+callbacks.fail._target_=tests.test_runs.FailInSecondEpoch",
                       cwd=root),
        "killed": _cli("trainer.max_epochs=40", "seed=7", cwd=root),
    }
    try:
        killed_dir = _wait_for_epoch(root, "seed=7")
        jobs["killed"].send_signal(signal.SIGKILL)
        for name, process in jobs.items():
            _, err = process.communicate(timeout=600)
            if name in ("grid", "tensorboard"):
                assert process.returncode == 0, err[-3000:]
            elif name == "failed":
                assert process.returncode != 0
    finally:
        for process in jobs.values():
            if process.poll() is None:
                process.kill()
    return root / "outputs", killed_dir




@pytest.mark.slow
def test_list_shows_every_run_with_its_status(runs_root, capsys):
    root, killed_dir = runs_root
    rows = _list(root, capsys=capsys)
    assert len(rows) == 5
    statuses = sorted(row["status"] for row in rows)
    assert statuses == ["failed", "finished", "finished", "finished", "interrupted"]
    killed = next(row for row in rows if row["status"] == "interrupted")
    assert killed["path"] == str(killed_dir.resolve())
    assert 1 <= killed["epochs_done"] < killed["epochs_planned"] == 40
    for row in rows:
        assert row["model"] == "resnet20" and row["data"] == "synthetic"
    finished = [row for row in rows if row["status"] == "finished"]
    assert all(0.0 <= row["best_val_acc"] <= 1.0 and row["test_acc"] is not None for row in finished)
    assert all(row["epochs_done"] == row["epochs_planned"] == 2 for row in finished)

    # Filters and sorting.
    assert [r["status"] for r in _list(root, "--status", "interrupted,failed", capsys=capsys)] \
        in (["failed", "interrupted"], ["interrupted", "failed"])
    assert _list(root, "--model", "resnet5*", capsys=capsys) == []
    by_acc = _list(root, "--sort", "best_val_acc", "--reverse", capsys=capsys)
    values = [r["best_val_acc"] for r in by_acc if r["best_val_acc"] is not None]
    assert values == sorted(values, reverse=True)

    # The table a person reads.
    assert main(["list", "--root", str(root)]) == 0
    table = capsys.readouterr().out
    for heading in ("id", "date", "experiment", "model", "epochs", "best val acc", "test acc",
                    "wall time", "status"):
        assert heading in table
    assert "interrupted" in table and "failed" in table and killed_dir.name in table


@pytest.mark.slow
def test_show_prints_config_and_final_metrics(runs_root, capsys):
    root, _ = runs_root
    (tensorboard_run,) = [run for run in find_runs(root) if "logger=tensorboard" in run.overrides]
    assert main(["show", tensorboard_run.id, "--root", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "finished"
    assert data["config"]["module"]["label_smoothing"] == 0.1
    assert data["config"]["module"]["num_classes"] == 10  # interpolations resolved
    assert data["config"]["paths"]["output_dir"] == str(tensorboard_run.path)
    assert "test/acc_top1" in data["metrics"] and data["best"]["epoch"] in (0, 1)
    assert data["provenance"]["device"]["accelerator"] == "cpu"

    assert main(["show", tensorboard_run.id, "--root", str(root)]) == 0
    text = capsys.readouterr().out
    assert "label_smoothing: 0.1" in text and "test/acc_top1" in text and "best val/acc_top1" in text


@pytest.mark.slow
def test_compare_shows_the_keys_that_differ_and_metrics_side_by_side(runs_root, capsys):
    root, _ = runs_root
    grid = sorted((run for run in find_runs(root) if "/" in run.id), key=lambda run: run.id)
    assert main(["compare", *(run.id for run in grid), "--root", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"] == {"optimizer.lr": [0.05, 0.2]}  # paths differ too, and are left out
    assert data["metrics"]["test/acc_top1"] == [run.final("test/acc_top1") for run in grid]
    assert main(["compare", *(run.id for run in grid), "--root", str(root)]) == 0
    assert "optimizer.lr" in capsys.readouterr().out


@pytest.mark.slow
def test_plot_draws_runs_into_one_png_labelled_by_what_differs(runs_root, tmp_path, capsys):
    from resnet_lab.runs.plot import run_labels

    root, killed_dir = runs_root
    grid = sorted((run for run in find_runs(root) if "/" in run.id), key=lambda run: run.id)
    tensorboard_run = next(run for run in find_runs(root) if "logger=tensorboard" in run.overrides)
    chosen = [*grid, tensorboard_run, resolve_run(str(killed_dir), root)]
    labels = run_labels(chosen)
    assert "optimizer.lr=0.05" in labels[0] and "optimizer.lr=0.2" in labels[1]
    assert "module.label_smoothing=0.1" in labels[2]
    assert len(set(labels)) == 4

    output = tmp_path / "curves.png"
    args = ["plot", *(run.id for run in chosen), "--root", str(root), "--metric", "val/acc_top1",
            "--metric", "val/loss", "-o", str(output)]
    assert main(args) == 0
    with Image.open(output) as image:
        image.verify()
    with Image.open(output) as image:
        assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 500
        assert len(set(image.convert("RGB").getdata())) > 50  # lines drawn, not a blank canvas

    assert main(["plot", grid[0].id, "--root", str(root), "--metric", "val/nothing", "-o", str(output)]) == 2
    assert "no run logged 'val/nothing'" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_ranks_the_jobs_of_a_grid(runs_root, capsys):
    root, _ = runs_root
    (sweep_dir,) = (root / "multiruns").iterdir()
    assert main(["sweep", sweep_dir.name, "--root", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metric"] == "val/acc_top1" and data["direction"] == "max"
    values = [job["value"] for job in data["jobs"]]
    assert values == sorted(values, reverse=True)
    assert [job["rank"] for job in data["jobs"]] == [1, 2]
    assert sorted(job["varied"] for job in data["jobs"]) == [["optimizer.lr=0.05"], ["optimizer.lr=0.2"]]
    assert "trainer.max_epochs=2" in data["common_overrides"]
    assert main(["sweep", str(sweep_dir), "--root", str(root)]) == 0
    assert "rerun it alone with" in capsys.readouterr().out


@pytest.mark.slow
def test_console_script_and_module_give_the_same_list(runs_root):
    root, _ = runs_root
    script = Path(sys.executable).with_name("resnet-lab")
    module = subprocess.run([sys.executable, "-m", "resnet_lab.runs", "list", "--json", "--root", str(root)],
                            capture_output=True, text=True, timeout=120)
    assert module.returncode == 0, module.stderr
    if not script.exists():
        pytest.skip("the resnet-lab console script is not installed (reinstall the package)")
    console = subprocess.run([str(script), "list", "--json", "--root", str(root)],
                             capture_output=True, text=True, timeout=120)
    assert console.returncode == 0, console.stderr
    assert json.loads(console.stdout) == json.loads(module.stdout)
