"""train(cfg): build the DataModule, net, LightningModule, loggers and Trainer from the config, fit, evaluate,
record the run. run_job(cfg) adds what a Hydra job needs: user errors as one message, failures recorded."""
import contextlib
import errno
import logging
import sys
import time
import warnings
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax

from deepres.callbacks import StepProgressBar
from deepres.checkpointing import LAST, AtomicCheckpointIO, RunCheckpoints, checkpoint_bytes
from deepres.config import is_multirun
from deepres.errors import EXIT_USER_ERROR, UserError
from deepres.metrics_csv import MetricsCSVLogger
from deepres.run_dir import RunDir
from deepres.signals import Interrupted, graceful_stop
from deepres.speed import constructor_config, prepare
from deepres.task import Classifier, Diverged
from deepres.validate import validate
from hydra_plugins.deepres_launchers import cluster_plugins

log = logging.getLogger("deepres")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")  # torch vs Lightning, not ours to fix


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLightningTips())


def build_loggers(cfg: DictConfig, run: RunDir, **wandb_init) -> list:
    """metrics.csv first, then the configured logger (W&B: with the run's id, and `wandb_init` for wandb.init)."""
    loggers = [MetricsCSVLogger(run.path)]
    if cfg.get("logger"):
        extra = {"id": run.wandb_id(), **wandb_init} if "Wandb" in cfg.logger._target_ else {}
        loggers.append(instantiate(cfg.logger, **extra))
    for logger in loggers[1:]:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def final_metrics(csv_logger: MetricsCSVLogger) -> dict:
    last = {}
    for step in sorted(csv_logger.rows):
        last.update(csv_logger.rows[step])
    return {k: last[k] for k in ("train/loss", "train/error", "test/loss", "test/error", "val/error") if k in last}


def train(cfg: DictConfig) -> dict:
    """Fit one run in the Hydra output directory, resuming from its checkpoint if it has one."""
    hydra_cfg = HydraConfig.get()
    run = RunDir(hydra_cfg.runtime.output_dir)
    run.lock()
    try:
        if run.status().get("status") == "completed":
            log.info(f"{run.path} already finished; delete it to train again")
            return run.status()
        validate(cfg)
        Console(stderr=True).print(Syntax(OmegaConf.to_yaml(cfg, resolve=True), "yaml"))
        return _fit(cfg, run, " ".join(hydra_cfg.overrides.task))
    except Interrupted as stop:
        run.write_status(status="interrupted", reason=str(stop))
        raise
    except Exception as err:
        err = explain_failure(err, run)
        if run.status():
            with contextlib.suppress(OSError):  # the disk may be full
                run.write_status(status="failed", reason=f"{type(err).__name__}: {err}")
        raise err
    finally:
        run.unlock()
        _finish_wandb()


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, Classifier]:
    """The run's DataModule and LightningModule (its net, optimiser and schedule) from its config."""
    datamodule = instantiate(cfg.data)
    net = prepare(instantiate(constructor_config(cfg.model), num_classes=datamodule.num_classes), cfg.model)
    schedule = instantiate(cfg.schedule, max_steps=cfg.trainer.max_steps, depth=cfg.model.depth)
    module = Classifier(net, instantiate(cfg.optimizer), schedule, datamodule.eval_names,
                        top5=getattr(datamodule, "top5", False))
    return datamodule, module


def _fit(cfg: DictConfig, run: RunDir, overrides: str) -> dict:
    started = time.time()
    previous_wall = run.status().get("wall_time_s", 0.0)
    run.write_status(status="running", name=cfg.name, overrides=overrides, reason="")
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build(cfg)
    run.check_free_space(checkpoint_bytes(module.net))
    loggers = build_loggers(cfg, run)
    trainer, checkpoints = make_trainer(cfg, run, loggers, AtomicCheckpointIO())
    fit(trainer, checkpoints, module, datamodule, run.resume_checkpoint())
    loggers[0].save()
    return run.write_status(status="completed", steps=trainer.global_step, **final_metrics(loggers[0]),
                            wall_time_s=round(previous_wall + time.time() - started, 1))


def make_trainer(cfg: DictConfig, run: RunDir, loggers: list | bool,
                 checkpoint_io: AtomicCheckpointIO) -> tuple[L.Trainer, RunCheckpoints]:
    """The Trainer of cfg.trainer, with the run's checkpoints (in run.checkpoints, written by checkpoint_io)."""
    checkpoints = RunCheckpoints(run.checkpoints, cfg.checkpoint.every_n_steps)
    callbacks = [checkpoints, StepProgressBar()] if cfg.trainer.enable_progress_bar else [checkpoints]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers,
                          plugins=[checkpoint_io, *cluster_plugins()], default_root_dir=str(run.path))
    return trainer, checkpoints


def fit(trainer: L.Trainer, checkpoints: RunCheckpoints, module: L.LightningModule,
        datamodule: L.LightningDataModule, ckpt_path: Path | None) -> None:
    """Train to trainer.max_steps (from ckpt_path when given), evaluate the last iteration, save final.ckpt."""
    # Lightning ends a SIGTERM'd fit with SIGTERMException (exit status 0); our handler has saved the checkpoint by
    # then and Interrupted below gives the run its status and exit code.
    with graceful_stop(checkpoints.request_stop), contextlib.suppress(SIGTERMException):
        trainer.fit(module, datamodule, ckpt_path=ckpt_path)
    if checkpoints.stop_signal is not None and trainer.global_step < trainer.max_steps:
        raise Interrupted(checkpoints.stop_signal)
    if trainer.global_step % trainer.val_check_batch:
        trainer.validate(module, datamodule, verbose=False)
    checkpoints.save_final(trainer)


def explain_failure(err: Exception, run: RunDir) -> Exception:
    """Add what was kept to a divergence, and turn a full disk into a user error."""
    kept = run.checkpoints / LAST
    kept = f"the last good checkpoint is {kept}" if kept.is_file() else "no checkpoint had been saved yet"
    if isinstance(err, Diverged):
        return Diverged(f"{err} The run is stopped; {kept}.")
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return UserError(f"no space left to write in {run.path} ({err.strerror}); every file written before is "
                         f"whole and {kept}: free some space and re-run the same command to resume.")
    return err


def _finish_wandb() -> None:
    """Close this job's W&B run, so that the next job of a sweep (same process) starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def run_job(cfg: DictConfig) -> dict | None:
    """The Hydra task: a single run exits 2 on a user error; a sweep job records its failure and lets the sweep go
    on (the summary marks it, and the sweep's exit status says a job failed)."""
    try:
        return train(cfg)
    except UserError as err:
        if is_multirun():
            log.error(f"job failed: {err}")
            return None
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Interrupted as stop:
        log.warning(f"{stop}: checkpoint saved; re-run the same command to resume")
        sys.exit(128 + stop.signum)
    except Exception:
        if is_multirun():
            log.exception("job failed")
            return None
        raise
