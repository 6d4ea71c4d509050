"""``python -m resnet_lab``: compose the config, check it, build every part, fit, test.

``train(cfg)`` is the whole job as a function of a composed config; it returns the metric
named by ``cfg.optimized_metric`` so that Hydra sweepers can optimize it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from resnet_lab import quiet
from resnet_lab.callbacks import RunRecord
from resnet_lab.checkpoint_io import with_checkpoint_io
from resnet_lab.checks import check_config
from resnet_lab.configs import command, register_resolvers
from resnet_lab.data import RESOLVERS as DATA_RESOLVERS
from resnet_lab.distributed import is_global_zero_from_env, job_scope
from resnet_lab.errors import EXIT_USER_ERROR, ConfigError, report, user_error_in
from resnet_lab.loggers import close_loggers, log_run_hyperparams
from resnet_lab.module import ImageClassifier
from resnet_lab.resume import log_notes, prepare_job
from resnet_lab.resume.hydra import resume_output_subdir, resume_run_dir
from resnet_lab.run_dir import (
    claim,
    holds,
    log_bytes,
    release,
    remove_if_unstarted,
    remove_sweep_if_unstarted,
)
from resnet_lab.run_names import RESOLVERS
from resnet_lab.sweeps.naming import sweep_key

log = logging.getLogger("resnet_lab")

register_resolvers([
    *RESOLVERS,
    *DATA_RESOLVERS,
    ("sweep_key", sweep_key, False),  # Optuna sweep directories
    ("resume_run_dir", resume_run_dir, False),
    ("resume_output_subdir", resume_output_subdir, False),
])


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers); skip nulls."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def scaled_lr(cfg: DictConfig) -> float:
    """``optimizer.lr`` is the LR per ``lr_base_batch_size`` images; scale it linearly.

    The linear rule of Goyal et al. 2017 ("Accurate, Large Minibatch SGD"): the images per
    optimizer step are the global batch times the gradient accumulation factor.
    """
    base = cfg.get("lr_base_batch_size")
    if base is None:
        return float(cfg.optimizer.lr)
    if base <= 0:
        raise ConfigError(f"lr_base_batch_size must be positive or null, got {base}.")
    accumulate = cfg.trainer.get("accumulate_grad_batches", 1) or 1
    images_per_step = cfg.data.batch_size * accumulate
    return float(cfg.optimizer.lr) * images_per_step / base


def build_module(cfg: DictConfig, net) -> ImageClassifier:
    lr = scaled_lr(cfg)
    if cfg.get("lr_base_batch_size") is not None:
        log.info(
            "learning rate %.4g = optimizer.lr %.4g per %d images x %d images per step / %d",
            lr, cfg.optimizer.lr, cfg.lr_base_batch_size,
            cfg.data.batch_size * (cfg.trainer.get("accumulate_grad_batches", 1) or 1),
            cfg.lr_base_batch_size,
        )
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return ImageClassifier(
        net,
        optimizer=instantiate(cfg.optimizer, lr=lr),
        scheduler=scheduler,
        **OmegaConf.to_container(cfg.module, resolve=True),
    )


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    # Crash-safe checkpoint writes and weights_only reads (resnet_lab.checkpoint_io).
    plugins = with_checkpoint_io(options.pop("plugins", None), trusted=bool(cfg.get("trust_checkpoint", False)))
    return instantiate(options, callbacks=callbacks, logger=loggers or False, plugins=plugins)


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback is not None else ""
    return path or None


def _optimized_value(cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, Any]) -> float | None:
    """The value of ``optimized_metric``: its best over the run when the best checkpoint
    monitors it, otherwise its last logged value."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "monitor", None) == name and callback.best_model_score is not None:
        return float(callback.best_model_score)
    if name not in metrics:
        raise ConfigError(
            f"optimized_metric={name!r} was never logged. Logged metrics: "
            f"{', '.join(sorted(metrics)) or 'none'}."
        )
    return float(metrics[name])


def _summary(record: dict[str, Any], output_dir: str) -> str:
    metrics = record.get("metrics", {})
    best = record.get("best", {})
    monitor = record.get("monitor", "val/acc_top1")
    lines = [f"run {record.get('status', '?')} in {record.get('wall_time_s', 0):.1f} s"]
    if monitor in best:
        lines.append(f"  best {monitor}: {best[monitor]:.4f} (epoch {best.get('epoch', 0) + 1})")
    for key in ("test/acc_top1", "test/acc_top5", "test/loss"):
        if key in metrics:
            lines.append(f"  {key}: {metrics[key]:.4f}")
    lines.append(f"  run directory: {output_dir}")
    return "\n".join(lines)


def train(cfg: DictConfig) -> float | None:
    start = prepare_job(cfg)  # resume/ckpt_path: config and checkpoint to start from (resnet_lab.resume)
    cfg = start.cfg
    log_notes(start.notes)
    check_config(cfg)
    output_dir = cfg.paths.output_dir
    if not is_global_zero_from_env() or holds(output_dir):  # the Hydra guard claimed it for the process
        return _train(cfg, start)
    claim(output_dir)
    try:
        return _train(cfg, start)
    finally:
        release(output_dir)  # train() called as a function: the caller's process goes on


def _train(cfg: DictConfig, start) -> float | None:
    output_dir = cfg.paths.output_dir
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    module = build_module(cfg, net)
    record: RunRecord = instantiate(cfg.run_record)
    callbacks = [*instantiate_group(cfg.get("callbacks")), record]
    loggers = instantiate_group(cfg.get("logger"))
    trainer = build_trainer(cfg, callbacks, loggers)
    log_run_hyperparams(loggers, cfg, trainer, net)  # config, parameter counts, git commit, versions, device
    if is_global_zero_from_env():
        log.info("training on %s: %d process%s, precision %s", type(trainer.accelerator).__name__.removesuffix("Accelerator"),
                 trainer.world_size, "es" if trainer.world_size > 1 else "", trainer.precision)

    trainer.fit(module, datamodule=datamodule, ckpt_path=start.ckpt_path)
    fit_metrics = dict(trainer.callback_metrics)
    if trainer.interrupted:
        log.warning("training was interrupted; skipping the test")
    elif cfg.get("test", True):
        best = _best_checkpoint(trainer)
        if best is None:
            log.info("no best checkpoint was saved; testing the final weights")
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
    summary = record.finish()
    close_loggers(loggers)  # W&B: one run per Hydra job, finished here
    if trainer.is_global_zero:
        log.info(_summary(summary, output_dir))
    # Lightning resets callback_metrics when testing starts: keep the fit's values too.
    return _optimized_value(cfg, trainer, {**fit_metrics, **trainer.callback_metrics})


# Hydra's default sweeper and launcher: a grid of jobs run in this process.
HYDRA_GRID = ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
              "hydra._internal.core_plugins.basic_launcher.BasicLauncher")


@command("train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    quiet.lightning_chatter()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    log_was_empty = log_bytes(run_dir) == 0  # then what the log holds at a refusal is this job's
    try:
        with job_scope():  # DDP children and teardown per Hydra job (resnet_lab.distributed)
            return train(cfg)
    except Exception as error:
        user_error = user_error_in(error)
        if user_error is None:
            raise
        # Refused input: nothing ran, so nothing of this job stays (a directory with other
        # files in it, a resumed run among them, is never removed).
        if is_global_zero_from_env():
            remove_if_unstarted(run_dir, own_log=log_was_empty)
        report(user_error)
        if multirun:
            hydra_cfg = HydraConfig.get()
            if (hydra_cfg.sweeper._target_, hydra_cfg.launcher._target_) != HYDRA_GRID:
                # A search sweeper counts a refused trial as failed and goes on; jobs in other
                # processes (joblib, SLURM) are reported by their launcher.
                raise
            # Hydra's grid runs its jobs here, one after another: stop before the next one
            # starts (they share most of the refused config) and exit as a single run does.
            # Jobs that ran before keep their directories; a sweep dir with none is removed.
            remove_sweep_if_unstarted(run_dir.parent)
        raise SystemExit(EXIT_USER_ERROR) from None
