"""train_pack(members): the runs of a pack trained as one network (models/packed.py), each leaving what a single
run leaves in its own run directory: status.json, metrics.csv, its W&B run, checkpoints/last.ckpt and final.ckpt.

Which runs may share a network is `pack_key`: CIFAR nets of one depth, shortcut option, data, batch size, optimiser
settings, schedule and trainer, on one device, differing only in seed, model.residual and optimizer.lr (each member
keeps its own seed, data order and augmentation draws, shortcut switch and learning-rate schedule)."""
import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from deepres.data.cifar import PackedCifarDataModule
from deepres.errors import UserError
from deepres.models.packed import PackedCifarResNet, packed_state
from deepres.packed_checkpoints import MemberLayout, PackCheckpointIO, merge, split
from deepres.packed_task import PackedClassifier, PackedSGD
from deepres.run_dir import RunDir
from deepres.signals import Interrupted
from deepres.speed import constructor_config, prepare
from deepres.task import Diverged
from deepres.train import build_loggers, explain_failure, final_metrics, fit, make_trainer
from deepres.validate import validate

log = logging.getLogger("deepres")
# keys in which the members of a pack may differ (data.seed follows seed unless set apart; name follows the net)
MEMBER_KEYS = ("seed", "data.seed", "model.residual", "optimizer.lr", "schedule.lr", "name", "logger")
SGD_SETTINGS = ("momentum", "dampening", "weight_decay", "nesterov")  # shared by a pack's members
SGD_KEYS = {"_target_", "_partial_", "lr", *SGD_SETTINGS}
RESUME_FILE = ".pack-resume.ckpt.tmp"  # a .tmp in checkpoints/: RunDir.lock removes one a killed pack left


def pack_key(cfg: DictConfig) -> str | None:
    """What runs that may share a network have in common (a string), or None for a run that trains alone: a net
    other than the CIFAR ResNet, more than one device, an optimiser other than SGD, activation checkpointing."""
    if (cfg.model._target_ != "deepres.models.CifarResNet" or cfg.data._target_ != "deepres.data.cifar.CifarDataModule"
            or set(cfg.optimizer) - SGD_KEYS or cfg.optimizer._target_ != "torch.optim.SGD"
            or cfg.model.get("checkpoint_activations") or cfg.trainer.get("devices", 1) != 1
            or cfg.trainer.get("num_nodes", 1) != 1):
        return None
    common = OmegaConf.to_container(cfg)
    common.pop("hydra", None)  # the job's directories, and the logger's that point into them
    common.pop("logger", None)
    common = OmegaConf.to_container(OmegaConf.create(common), resolve=True)
    for key in MEMBER_KEYS:
        *parents, leaf = key.split(".")
        node = common
        for parent in parents:
            node = node[parent]
        node.pop(leaf, None)
    return json.dumps(common, sort_keys=True)


@dataclass
class Member:
    """One run of a pack: its composed config (resolved), its run directory, its overrides (for status.json)."""

    cfg: DictConfig
    run: RunDir
    overrides: str


def train_pack(members: list[Member]) -> list[dict]:
    """Train the members as one network; returns their status.json contents. A member that diverges is marked
    failed and frozen while the others finish; an error of the whole pack marks every unfinished member."""
    for member in members:
        member.run.lock()
    loggers: list[list] = []
    try:
        for member in members:
            validate(member.cfg)
        keys = {pack_key(member.cfg) for member in members}
        if None in keys or len(keys) > 1:
            raise UserError(f"the runs {[m.overrides for m in members]} cannot share a network: they must be CIFAR "
                            f"nets differing only in {', '.join(MEMBER_KEYS[:4])}.")
        return _fit_pack(members, loggers)
    except Interrupted as stop:
        for member in members:
            if member.run.status().get("status") == "running":
                member.run.write_status(status="interrupted", reason=str(stop))
        raise
    except Exception as err:
        for member in members:
            if member.run.status().get("status") in (None, "running"):
                explained = explain_failure(err, member.run)
                with contextlib.suppress(OSError):
                    member.run.write_status(status="failed", reason=f"{type(explained).__name__}: {explained}")
        raise
    finally:
        for member in members:
            member.run.unlock()
        for logger in (lg for member_loggers in loggers for lg in member_loggers[1:]):
            logger.experiment.finish()


def _resume_checkpoint(members: list[Member], module: PackedClassifier, layouts: list[MemberLayout],
                       param_group: dict) -> Path | None:
    """The members' checkpoints merged into one file for Lightning to resume from (None for a fresh pack)."""
    paths = [member.run.resume_checkpoint() for member in members]
    if all(path is None for path in paths):
        return None
    loaded = [torch.load(p, map_location="cpu", weights_only=False) if p else None for p in paths]
    steps = {c["global_step"] if c else 0 for c in loaded}
    if len(steps) > 1:
        raise UserError(f"the runs {[m.overrides for m in members]} stand at different iterations "
                        f"({sorted(steps)}) and cannot resume as one pack; the packed launcher packs runs by "
                        "iteration.")
    path = members[0].run.checkpoints / RESUME_FILE
    torch.save(merge(loaded, layouts, module, param_group), path)
    return path


def _fit_pack(members: list[Member], loggers: list[list]) -> list[dict]:
    started, cfg = time.time(), members[0].cfg
    previous_wall = [member.run.status().get("wall_time_s", 0.0) for member in members]
    for member in members:
        member.run.write_status(status="running", name=member.cfg.name, overrides=member.overrides, reason="",
                                pack=[m.run.path.name for m in members])
    datamodule = instantiate(cfg.data, _target_=f"{PackedCifarDataModule.__module__}.PackedCifarDataModule",
                             seeds=[member.cfg.data.seed for member in members])
    singles, layouts = [], []
    for member in members:  # each member's net as its single run initialises it
        L.seed_everything(member.cfg.seed, verbose=False)
        single = instantiate(constructor_config(member.cfg.model), num_classes=datamodule.num_classes)
        singles.append(single)
        layouts.append(MemberLayout.of(single, instantiate(member.cfg.optimizer)(single.parameters())))
    net = PackedCifarResNet(cfg.model.depth, [m.cfg.model.residual for m in members], cfg.model.shortcut,
                            datamodule.num_classes)
    net.load_state_dict(packed_state([single.state_dict() for single in singles], net.state_dict()))
    prepare(net, cfg.model)
    optimizer = functools.partial(PackedSGD, lrs=[m.cfg.optimizer.lr for m in members],
                                  **{k: cfg.optimizer[k] for k in SGD_SETTINGS if k in cfg.optimizer})
    schedules = [instantiate(m.cfg.schedule, max_steps=cfg.trainer.max_steps, depth=cfg.model.depth) for m in members]
    loggers.extend(build_loggers(m.cfg, m.run, reinit="create_new") for m in members)

    def on_failure(k: int, err: Diverged) -> None:
        err = explain_failure(err, members[k].run)
        members[k].run.write_status(status="failed", reason=f"{type(err).__name__}: {err}")
        loggers[k][0].save()
        log.error(f"{members[k].run.path}: {err} The other runs of its pack go on.")

    module = PackedClassifier(net, optimizer, schedules, loggers, datamodule.eval_names, on_failure)
    io = PackCheckpointIO(lambda ckpt: [(members[k].run.checkpoints, c)
                                        for k, c in split(ckpt, layouts, module, module.live).items()])
    trainer, checkpoints = make_trainer(cfg, members[0].run, False, io)
    param_group = {k: v for k, v in optimizer(net.parameters()).state_dict()["param_groups"][0].items()
                   if k not in ("lrs", "params")}
    resume = _resume_checkpoint(members, module, layouts, param_group)
    try:
        fit(trainer, checkpoints, module, datamodule, resume)
    finally:
        if resume is not None:
            resume.unlink(missing_ok=True)
    wall, statuses = time.time() - started, []
    for k, member in enumerate(members):
        if k in module.failed:
            statuses.append(member.run.status())
            continue
        loggers[k][0].save()
        statuses.append(member.run.write_status(status="completed", steps=trainer.global_step,
                                                **final_metrics(loggers[k][0]),
                                                wall_time_s=round(previous_wall[k] + wall, 1)))
    return statuses
