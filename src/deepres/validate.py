"""Checks of a composed config that must pass before any training starts; each failure is one UserError."""
from omegaconf import DictConfig

from deepres.errors import UserError
from deepres.models.blocks import check_shortcut
from deepres.models.cifar import depth_to_n
from deepres.schedule import milestone_steps


def _positive(cfg: DictConfig, key: str) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UserError(f"{key}={value!r} must be a positive number.")


def validate(cfg: DictConfig) -> None:
    depth_to_n(cfg.model.depth)
    check_shortcut(cfg.model.shortcut)
    for key in ("data.batch_size", "data.eval_batch_size", "optimizer.lr", "trainer.max_steps",
                "trainer.val_check_interval", "trainer.log_every_n_steps", "checkpoint.every_n_steps"):
        _positive(cfg, key)
    milestone_steps(cfg.schedule.milestones, cfg.trainer.max_steps)
