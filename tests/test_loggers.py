"""Loggers: what each one writes, read back with the tools of its own format.

CSV through Lightning's file, TensorBoard through TensorBoard's own EventAccumulator, W&B
through its offline run file (nothing here touches the network: no credentials, HOME is a
temporary directory, and the loggers must choose offline by themselves).
"""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnet_lab import loggers as resnet_loggers
from resnet_lab.loggers import wandb as wandb_logging
from resnet_lab.train import train
from tests.helpers import REPO, TINY, compose_config

# ---------------------------------------------------------------------------------------
# Reading a W&B offline run: <run>/wandb/offline-run-*/run-<id>.wandb is W&B's record log,
# LevelDB's log format: a 7-byte header (":W&B", magic 0xBEE1, version), then 32 KiB blocks
# of chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last) whose data
# are protobuf `Record`s (wandb.proto.wandb_internal_pb2).


def wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # too small for a chunk header: padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        pending += data[position:position + length]
        position += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_offline_run(run_dir: Path) -> dict:
    """Config, history rows and exit code of the one W&B offline run in ``run_dir``."""
    import wandb

    wandb.teardown()  # W&B's service writes the file behind the run; wait for it to finish
    (offline,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    (log_file,) = offline.glob("run-*.wandb")
    config, history, exit_code, run_id, tags, job_type = {}, [], None, None, [], None
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id, tags, job_type = record.run.run_id, list(record.run.tags), record.run.job_type
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return {"id": run_id, "dir": offline, "config": config, "history": history, "exit_code": exit_code,
            "tags": tags, "job_type": job_type}


def offline_env(home: Path) -> dict[str, str]:
    """No W&B credentials anywhere (a HOME without ~/.netrc), and no WANDB_* setting: the
    logger has to choose offline by itself."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    return {**env, "HOME": str(home), "NETRC": str(home / ".netrc"), "WANDB_SILENT": "true",
            "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"), "PYTHONUNBUFFERED": "1"}


def _use_env(patch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in [key for key in os.environ if key not in env]:
        patch.delenv(key)
    for key, value in env.items():
        patch.setenv(key, value)


@pytest.fixture
def no_wandb_credentials(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    _use_env(monkeypatch, offline_env(home))
    yield
    import wandb

    wandb.teardown()  # stop the W&B service process this test started


def csv_series(run: Path, key: str) -> list[float]:
    with (run / "csv" / "metrics.csv").open() as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


# ---------------------------------------------------------------------------------------
# One real run with logger=many (csv + tensorboard + wandb), read back by every format.


@pytest.fixture(scope="module")
def many_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("many")
    home = tmp / "home"
    home.mkdir()
    run = tmp / "run"
    with pytest.MonkeyPatch.context() as patch:
        _use_env(patch, offline_env(home))
        cfg = compose_config([*TINY, "trainer.max_epochs=2", "logger=many", "optimizer.lr=0.3",
                              "task_name=probe", "tags=[baseline,tiny]"], run_dir=run)
        train(cfg)
        import wandb

        wandb.teardown()
    return run


def test_csv_hyperparameters_hold_config_and_provenance(many_run):
    hparams = yaml.safe_load((many_run / "csv" / "hparams.yaml").read_text())
    assert hparams["optimizer"]["lr"] == 0.3
    assert hparams["data"]["image_size"] == 16  # the resolved config, not the defaults
    provenance = hparams["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:
        assert provenance["git"]["commit"] == head.stdout.strip()
        assert isinstance(provenance["git"]["dirty"], bool)
    assert torch.__version__.startswith(provenance["packages"]["torch"].split("+")[0])
    assert provenance["packages"]["lightning"] == L.__version__
    assert provenance["device"]["accelerator"] == "cpu"
    assert provenance["device"]["devices"] == 1
    # The network's size next to the config: all parameters of resnet20 (16x16, 10 classes) train.
    from resnet_lab.models import build_model

    net = build_model("resnet20", num_classes=10, in_chans=3)
    total = sum(p.numel() for p in net.parameters())
    assert hparams["model_params"] == {"total": total, "trainable": total}


def test_tensorboard_event_reader_finds_the_logged_scalars(many_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(many_run / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    for tag in ("train/loss", "val/loss", "val/acc_top1", "test/acc_top1", "train/lr"):
        assert tag in scalars, (tag, scalars)
    val_acc = [event.value for event in accumulator.Scalars("val/acc_top1")]
    assert val_acc == pytest.approx(csv_series(many_run, "val/acc_top1"))
    assert len(val_acc) == 2

    # The HParams dashboard: the config and provenance, linked to real metric tags.
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["optimizer/lr"].number_value == pytest.approx(0.3)
    assert hparams["provenance/device/accelerator"].string_value == "cpu"
    assert hparams["provenance/packages/lightning"].string_value == L.__version__
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {"val/acc_top1", "test/acc_top1"} <= {m.name.tag for m in experiment.experiment.metric_infos}
    assert "hp_metric" not in scalars  # no placeholder scalar


def test_wandb_offline_run_holds_history_and_config(many_run):
    run = wandb_offline_run(many_run)
    assert run["id"] == (many_run / wandb_logging.WANDB_ID_FILE).read_text().strip()
    assert run["config"]["optimizer"]["lr"] == 0.3
    assert run["config"]["provenance"]["device"]["accelerator"] == "cpu"
    assert run["tags"] == ["baseline", "tiny"] and run["job_type"] == "probe"  # tags, task_name
    val_acc = [row["val/acc_top1"] for row in run["history"] if "val/acc_top1" in row]
    assert val_acc == pytest.approx(csv_series(many_run, "val/acc_top1"))
    assert any("test/acc_top1" in row for row in run["history"])  # logged after fit, same run
    assert run["exit_code"] == 0  # finished


# ---------------------------------------------------------------------------------------
# W&B: offline unless credentials, one run per job finished even on failure, resumed by id.


def test_wandb_is_offline_unless_credentials_or_told(no_wandb_credentials, monkeypatch):
    assert wandb_logging.wandb_mode(None) == "offline"
    assert wandb_logging.wandb_mode(False) == "online"
    assert wandb_logging.wandb_mode(True) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_logging.wandb_mode(None) is None  # W&B's own setting is respected
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    assert wandb_logging.wandb_mode(None) == "online"


class _Tiny(L.LightningModule):
    def __init__(self, fail_at_epoch: int | None = None) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)
        self.fail_at_epoch = fail_at_epoch

    def training_step(self, batch, batch_idx):
        if self.current_epoch == self.fail_at_epoch:
            raise RuntimeError("a job that fails midway")
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(run_dir: Path, *, epochs: int, fail_at_epoch: int | None = None) -> resnet_loggers.WandbLogger:
    logger = resnet_loggers.WandbLogger(str(run_dir))
    trainer = L.Trainer(max_epochs=epochs, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(2, (8,))), batch_size=4)
    trainer.fit(_Tiny(fail_at_epoch), data)
    return logger


def test_wandb_run_is_finished_when_the_job_fails(no_wandb_credentials, tmp_path):
    run_dir = tmp_path / "failing"
    with pytest.raises(RuntimeError, match="fails midway"):
        _fit(run_dir, epochs=3, fail_at_epoch=1)
    import wandb

    assert wandb.run is None  # nothing left open for the next job of a multirun
    run = wandb_offline_run(run_dir)
    assert run["exit_code"] == 1
    assert len([row for row in run["history"] if "train/loss" in row]) == 2  # epoch 0's steps


def test_wandb_continues_the_same_run_when_the_run_directory_is_resumed(no_wandb_credentials, tmp_path):
    run_dir = tmp_path / "run"
    first = _fit(run_dir, epochs=1)
    resnet_loggers.close_loggers([first])
    second = _fit(run_dir, epochs=1)
    resnet_loggers.close_loggers([second])
    segments = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(segments) == 2  # `wandb sync` uploads both into one W&B run
    # Each segment holds run-<id>.wandb; its directory name gains a "-1" suffix when both
    # segments start within the same second, so the id is read from the file, not the name.
    ids = {wandb_file.stem.removeprefix("run-") for segment in segments
           for wandb_file in segment.glob("run-*.wandb")}
    assert ids == {(run_dir / wandb_logging.WANDB_ID_FILE).read_text().strip()}
    # ...while another run directory gets a W&B run of its own.
    other = _fit(tmp_path / "other", epochs=1)
    resnet_loggers.close_loggers([other])
    assert (tmp_path / "other" / wandb_logging.WANDB_ID_FILE).read_text() != \
        (run_dir / wandb_logging.WANDB_ID_FILE).read_text()


def test_wandb_logs_from_rank_zero_only(no_wandb_credentials, tmp_path, monkeypatch):
    from lightning.fabric.loggers.logger import _DummyExperiment
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = resnet_loggers.WandbLogger(str(tmp_path / "run"))
    assert isinstance(logger.experiment, _DummyExperiment)
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.finalize("failed")
    assert not (tmp_path / "run" / "wandb").exists()
    assert not (tmp_path / "run" / wandb_logging.WANDB_ID_FILE).exists()


@pytest.mark.slow
def test_multirun_logs_one_wandb_run_per_job(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "resnet_lab", "-m", *TINY, "logger=wandb", "optimizer.lr=0.05,0.2"],
        cwd=tmp_path, env=offline_env(home), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    runs = [wandb_offline_run(sweep / job) for job in ("0", "1")]
    assert runs[0]["id"] != runs[1]["id"]
    assert [run["config"]["optimizer"]["lr"] for run in runs] == [0.05, 0.2]
    for run in runs:
        assert run["exit_code"] == 0
        assert any("val/acc_top1" in row for row in run["history"])


# ---------------------------------------------------------------------------------------
# MLflow: a local store by default, read back through MLflow's own client.


def test_mlflow_run_is_read_back_through_mlflows_client(tmp_path):
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    cfg = compose_config([*TINY, "trainer.max_epochs=2", "logger=[csv,mlflow]", "task_name=probe",
                          "tags=[baseline,tiny]"], run_dir=run)
    train(cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("probe")  # the task name
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == (run / "mlflow_run_id").read_text().strip()
    assert found.data.tags["baseline"] == "true" and found.data.tags["tiny"] == "true"
    assert found.data.params["optimizer/lr"] == str(cfg.optimizer.lr)
    assert int(found.data.params["model_params/total"]) > 0
    history = [m.value for m in client.get_metric_history(found.info.run_id, "val/acc_top1")]
    assert history == pytest.approx(csv_series(run, "val/acc_top1"))
    assert "test/acc_top1" in found.data.metrics
    # A resumed run (same directory) continues the same MLflow run; its parameters stay.
    again = resnet_loggers.MLFlowLogger(str(run), tracking_uri=client.tracking_uri, experiment_name="probe")
    assert again.run_id == found.info.run_id
    again.log_hyperparams({"optimizer": {"lr": 99.0}, "new": 1})
    params = client.get_run(found.info.run_id).data.params
    assert params["optimizer/lr"] == str(cfg.optimizer.lr) and params["new"] == "1"
