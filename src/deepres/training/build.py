"""What every task's run is built with, from its composed config: the loggers and the Trainer (the task builds the
data and the LightningModule: training/task.py)."""
import os
from collections.abc import Callable

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from deepres.runs.metrics_logger import MetricsCSVLogger
from deepres.runs.run_dir import RunDir
from deepres.training.checkpoints import AtomicCheckpointIO, RunCheckpoints
from deepres.training.collector import ManualCollection
from deepres.training.progress import StepProgressBar


def build_loggers(cfg: DictConfig, run: RunDir) -> list:
    """metrics.csv first, then the configured logger (W&B: with the run's id, so a resumed run continues its W&B
    run, and one W&B run per run of a pack)."""
    loggers = [MetricsCSVLogger(run.path)]
    if cfg.get("logger"):
        wandb = issubclass(get_class(cfg.logger._target_), WandbLogger)
        if wandb:  # its banner, version and sync lines on every run; _finish says where an offline run is
            os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(instantiate(cfg.logger, **({"id": run.wandb_id(), "reinit": "create_new"} if wandb else {})))
    for logger in loggers[1:]:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def cluster_plugins() -> list:
    """Trainer plugins for the cluster the job runs on: under SLURM, Lightning's SLURM environment (ranks, nodes,
    master address for DDP) without its auto-requeue, since submitit owns requeueing (hydra_plugins)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def make_trainer(cfg: DictConfig, run: RunDir, checkpoint_io: AtomicCheckpointIO,
                 before_save: Callable[[], None] = lambda: None) -> tuple[L.Trainer, RunCheckpoints]:
    """The Trainer of cfg.trainer, with the run's checkpoints (in run.checkpoints, written by checkpoint_io, after
    before_save()). The LightningModule logs to its members' loggers itself: the Trainer has none."""
    checkpoints = RunCheckpoints(run.checkpoints, cfg.checkpoint.every_n_steps, before_save)
    callbacks = [checkpoints, StepProgressBar()] if cfg.trainer.enable_progress_bar else [checkpoints]
    if cfg.gc.manual:
        callbacks.append(ManualCollection(cfg.gc.every_n_steps))
    # ghost BN (model.bn_batch) takes statistics within each process: SyncBatchNorm would replace its layers
    ghost = {"sync_batchnorm": False} if cfg.model.get("bn_batch") else {}
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False,
                          plugins=[checkpoint_io, *cluster_plugins()], default_root_dir=str(run.path), **ghost)
    return trainer, checkpoints
