"""The trainer options: what each one asks Lightning for, the checks against the machine,
and the training options they carry (precision, clipping, accumulation)."""

from __future__ import annotations

import json
import os

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from resnet_lab.checks import check_config
from resnet_lab.errors import ConfigError
from resnet_lab.train import build_module, build_trainer
from tests.helpers import TINY, compose_config, run_cli, run_dirs

TRAINERS = ("cpu", "gpu", "ddp", "ddp_cpu", "multinode")


def _no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _gpus(monkeypatch, count: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


@pytest.mark.parametrize("option", TRAINERS)
def test_every_trainer_option_composes(option, tmp_path):
    cfg = compose_config([*TINY, f"trainer={option}"], run_dir=tmp_path / "run")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    for key in ("accelerator", "devices", "num_nodes", "precision", "strategy", "sync_batchnorm",
                "gradient_clip_val", "accumulate_grad_batches"):
        assert key in cfg.trainer, (option, key)
    assert "compile" in cfg.module and "channels_last" in cfg.module


def test_gpu_options_ask_for_what_the_docs_promise(tmp_path):
    gpu = compose_config([*TINY, "trainer=gpu"], run_dir=tmp_path / "run").trainer
    assert (gpu.accelerator, gpu.devices, gpu.precision) == ("gpu", 1, "bf16-mixed")
    assert compose_config([*TINY, "trainer=gpu"], run_dir=tmp_path / "run").module.channels_last is True
    ddp = compose_config([*TINY, "trainer=ddp"], run_dir=tmp_path / "run").trainer
    assert (ddp.accelerator, ddp.devices, ddp.strategy, ddp.sync_batchnorm) == ("gpu", "auto", "ddp", True)
    assert ddp.precision == "bf16-mixed"
    multi = compose_config([*TINY, "trainer=multinode", "trainer.num_nodes=2", "trainer.devices=4"],
                           run_dir=tmp_path / "run").trainer
    assert (multi.strategy, multi.num_nodes, multi.devices, multi.sync_batchnorm) == ("ddp", 2, 4, True)


def test_gpu_trainer_sets_the_modules_channels_last(tmp_path):
    cfg = compose_config([*TINY, "trainer=gpu", "module.compile=true"], run_dir=tmp_path / "run")
    module = build_module(cfg, instantiate(cfg.model))
    assert module.channels_last is True and module.compile is True


def test_ddp_cpu_builds_two_gloo_processes(tmp_path):
    cfg = compose_config([*TINY, "trainer=ddp_cpu"], run_dir=tmp_path / "run")
    check_config(cfg)
    trainer = build_trainer(cfg, [], [])
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_devices == 2 and trainer.strategy.num_processes == 2
    assert trainer.strategy._get_process_group_backend() == "gloo"
    single = build_trainer(compose_config([*TINY, "trainer=cpu"], run_dir=tmp_path / "run"), [], [])
    assert isinstance(single.strategy, SingleDeviceStrategy)


@pytest.mark.parametrize("option", ["gpu", "ddp"])
def test_gpu_trainer_without_a_gpu_is_a_clear_error(option, monkeypatch, tmp_path):
    _no_gpu(monkeypatch)
    cfg = compose_config([*TINY, f"trainer={option}"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="asks for a CUDA GPU") as error:
        check_config(cfg)
    assert "trainer=cpu" in str(error.value) and "trainer=ddp_cpu" in str(error.value)


def test_more_gpus_than_visible_is_a_clear_error(monkeypatch, tmp_path):
    _gpus(monkeypatch, 2)
    cfg = compose_config([*TINY, "trainer=ddp", "trainer.devices=4"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="asks for 4 GPUs on this machine, but 2 are visible"):
        check_config(cfg)
    check_config(compose_config([*TINY, "trainer=ddp", "trainer.devices=2"], run_dir=tmp_path / "run"))
    check_config(compose_config([*TINY, "trainer=ddp"], run_dir=tmp_path / "run"))  # auto


def test_multinode_needs_its_sizes(tmp_path):
    cfg = compose_config([*TINY, "trainer=multinode", "trainer.accelerator=cpu",
                          "trainer.sync_batchnorm=false", "trainer.devices=1"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="trainer.num_nodes must be set"):
        check_config(cfg)
    cfg = compose_config([*TINY, "trainer=multinode", "trainer.accelerator=cpu",
                          "trainer.sync_batchnorm=false", "trainer.devices=1", "trainer.num_nodes=2"],
                         run_dir=tmp_path / "run")
    check_config(cfg)


def test_sync_batchnorm_on_cpu_processes_is_a_clear_error(tmp_path):
    # PyTorch's SyncBatchNorm raises deep inside DistributedDataParallel on CPU modules.
    cfg = compose_config([*TINY, "trainer=ddp_cpu", "trainer.sync_batchnorm=true"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="SyncBatchNorm does not run on the CPU"):
        check_config(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_design_card_command_without_a_gpu_says_what_to_do(tmp_path):
    result = run_cli(["model=resnet50", "trainer=ddp", *TINY], tmp_path, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "asks for a CUDA GPU" in output and "trainer=ddp_cpu" in output
    assert "Traceback" not in output
    assert not any((run / "run.json").exists() for run in run_dirs(tmp_path))


def _fit(cfg, *callbacks) -> tuple[L.Trainer, torch.nn.Module]:
    """Fit cfg's module in-process without loggers; return the trainer and the module."""
    module = build_module(cfg, instantiate(cfg.model))
    trainer = build_trainer(cfg, list(callbacks), [])
    trainer.fit(module, datamodule=instantiate(cfg.data))
    return trainer, module


_QUIET = ("logger=none", "callbacks=none", "+trainer.enable_progress_bar=false", "+trainer.enable_checkpointing=false")


class _LogitsDtype(L.Callback):
    """Records the dtype of the network's output in every training and validation step."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def setup(self, trainer, pl_module, stage) -> None:
        pl_module.net.register_forward_hook(lambda module, args, out: self.dtypes.add(out.dtype))


def test_bf16_mixed_precision_trains_on_cpu(tiny_cfg):
    # bf16 convolutions are several times slower than fp32 on most CPUs: keep it to 2 steps.
    cfg = tiny_cfg("trainer.precision=bf16-mixed", "trainer.max_epochs=1", "data.image_size=8",
                   "data.batch_size=8", "data.eval_batch_size=8", "+trainer.limit_train_batches=2",
                   "+trainer.limit_val_batches=1", *_QUIET)
    spy = _LogitsDtype()
    trainer, _ = _fit(cfg, spy)
    assert spy.dtypes == {torch.bfloat16}  # the network ran under bf16 autocast
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert trainer.global_step == 2  # it stepped, and validation produced its metrics
    assert {"val/loss", "val/acc_top1"} <= set(trainer.callback_metrics)


def _plain_sgd(*extra: str) -> tuple[str, ...]:
    # lr 1, no momentum, no decay: the first update of the weights *is* minus the gradient.
    return ("optimizer.lr=1.0", "optimizer.momentum=0.0", "optimizer.nesterov=false",
            "optimizer.weight_decay=0.0", "lr_base_batch_size=null", "scheduler=constant",
            "trainer.max_epochs=-1", "trainer.max_steps=1", "+trainer.limit_val_batches=0",
            "test=false", "optimized_metric=null", *_QUIET, *extra)


def _update_norm(cfg) -> float:
    L.seed_everything(0)
    module = build_module(cfg, instantiate(cfg.model))
    before = [p.detach().clone() for p in module.net.parameters()]
    trainer = build_trainer(cfg, [], [])
    trainer.fit(module, datamodule=instantiate(cfg.data))
    assert trainer.global_step == 1
    deltas = [(p.detach() - b).flatten() for p, b in zip(module.net.parameters(), before)]
    return float(torch.cat(deltas).norm())


def test_gradient_clipping_bounds_the_gradient_norm(tiny_cfg):
    unclipped = _update_norm(tiny_cfg(*_plain_sgd()))
    clip = unclipped / 10
    clipped = _update_norm(tiny_cfg(*_plain_sgd(f"trainer.gradient_clip_val={clip}")))
    assert unclipped > clip
    assert clipped == pytest.approx(clip, rel=1e-3)


def test_gradient_accumulation_steps_once_per_n_batches(tiny_cfg):
    # TINY: 128 training images in batches of 32 = 4 batches per epoch.
    trainer, _ = _fit(tiny_cfg("trainer.accumulate_grad_batches=2", "+trainer.limit_val_batches=0",
                               "test=false", *_QUIET))
    assert trainer.global_step == 2
    trainer, _ = _fit(tiny_cfg("+trainer.limit_val_batches=0", "test=false", *_QUIET))
    assert trainer.global_step == 4


def test_the_scaled_learning_rate_is_printed_and_used(tiny_cfg, caplog):
    cfg = tiny_cfg("optimizer.lr=0.4", "data.batch_size=32", "trainer.accumulate_grad_batches=2")
    with caplog.at_level("INFO", logger="resnet_lab"):
        module = build_module(cfg, instantiate(cfg.model))
    assert module.optimizer_factory.keywords["lr"] == pytest.approx(0.4 * 64 / 256)
    assert "learning rate 0.1 = optimizer.lr 0.4 per 256 images x 64 images per step" in caplog.text


# --- cluster and parallel launchers ---------------------------------------------------------


def _fake_slurm(folder) -> dict[str, str]:
    """`srun` and an `sbatch` that keeps the script it is given and refuses the job."""
    folder.mkdir()
    (folder / "srun").write_text("#!/bin/sh\nexit 1\n")
    (folder / "sbatch").write_text(
        '#!/bin/sh\nfor last; do :; done\ncp "$last" "$CAPTURE"\n'
        'echo "sbatch: error: refused by the test double" >&2\nexit 1\n'
    )
    for tool in ("srun", "sbatch"):
        (folder / tool).chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "CAPTURE": str(folder / "job.sh")}


def test_slurm_launcher_asks_for_what_the_trainer_needs(tmp_path):
    env = _fake_slurm(tmp_path / "bin")
    result = run_cli(["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=multinode",
                      "trainer.num_nodes=2", "trainer.devices=4", "optimizer.lr=0.1,0.2"],
                     tmp_path, env=env, timeout=300)
    assert result.returncode != 0 and "refused by the test double" in result.stdout + result.stderr
    script = (tmp_path / "bin" / "job.sh").read_text()
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--time=1440", "--cpus-per-task=8", "--array=0-1"):
        assert f"#SBATCH {line}" in script, line
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert str(sweep / ".submitit") in script  # logs next to the jobs they belong to


@pytest.mark.slow
def test_local_parallel_runs_ddp_jobs_side_by_side_in_one_sweep(tmp_path):
    result = run_cli(["-m", "hydra/launcher=local_parallel", "trainer=ddp_cpu", "optimizer.lr=0.05,0.1", *TINY],
                     tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()  # workers share the sweep directory
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job, lr in (("0", 0.05), ("1", 0.1)):
        assert f"optimizer.lr={lr}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
        assert json.loads((sweep / job / "run.json").read_text())["status"] == "finished"
