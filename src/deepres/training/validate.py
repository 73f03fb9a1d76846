"""Checks of a composed config that must pass before any training starts; each failure is one UserError."""
import inspect

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from deepres.errors import UserError
from deepres.models import NETS, CifarResNet
from deepres.models.blocks import check_shortcut, check_stride_on
from deepres.models.build import NET_SWITCHES, STEP_GRAPH
from deepres.training.schedule import milestone_steps


def _check_model_keys(cfg: DictConfig, net: type) -> None:
    """Every key of the model config is an argument of the net's constructor or a net switch (`+model.foo=1` adds a
    key that the config does not have, which Hydra accepts)."""
    parameters = inspect.signature(net).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [k for k in parameters if k != "num_classes"] + [k for k in NET_SWITCHES if k not in parameters]
    unknown = [k for k in cfg.model if k != "_target_" and k not in valid]
    if unknown:
        raise UserError(f"model.{unknown[0]} is not a key of the model ({cfg.model._target_} takes no argument "
                        f"{unknown[0]!r}). Valid keys under model: {', '.join(valid)}.")


def _check_model(cfg: DictConfig) -> None:
    """The model's keys must be the net's, the depth one the net has, and the net the one of the data set (32x32 or
    224x224 stem)."""
    net = get_class(cfg.model._target_)
    _check_model_keys(cfg, net)
    if net not in NETS:
        return
    net.check_depth(cfg.model.depth)
    if cfg.data.name not in net.data_sets:
        pairs = "; ".join(f"model={other.config}: data={' or '.join(other.data_sets)}" for other in NETS)
        raise UserError(f"model={net.config} does not train on data={cfg.data.name}: each net is built for its data "
                        f"set's image size ({pairs}).")


def _positive(cfg: DictConfig, key: str) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UserError(f"{key}={value!r} must be a positive number.")


def processes(cfg: DictConfig) -> int:
    """How many processes train the run (trainer=ddp: one per device)."""
    return cfg.trainer.get("devices", 1) * cfg.trainer.get("num_nodes", 1)


def _check_bn_batch(cfg: DictConfig) -> None:
    """model.bn_batch groups images within a process: it divides the process's batch, or covers it (one process)."""
    group = cfg.model.get("bn_batch")
    if group is None:
        return
    count = processes(cfg)
    share = cfg.data.batch_size // count
    where = f"data.batch_size={cfg.data.batch_size}" + (f" over {count} processes" if count > 1 else "")
    if isinstance(group, bool) or not isinstance(group, int) or group <= 0:
        raise UserError(f"model.bn_batch={group!r} must be a whole number of images (or null: the whole batch).")
    if group < share and share % group:
        raise UserError(f"model.bn_batch={group} does not divide the batch of {share} images ({where}): BN "
                        f"statistics are taken over groups of bn_batch consecutive images; valid: a divisor of "
                        f"{share}, or null (the whole batch).")
    if group > share and count > 1:
        raise UserError(f"model.bn_batch={group} is more images than each process trains on ({share}: {where}), "
                        f"and a group of BN statistics never spans processes; valid: a divisor of {share}, or null "
                        "(statistics over the whole batch, synchronised across processes by "
                        "trainer.sync_batchnorm).")


def _check_step_graph(cfg: DictConfig) -> None:
    """model.compile=step_graph captures one device's iteration and draws its batch from data held there."""
    if cfg.model.get("compile") != STEP_GRAPH:
        return
    count = processes(cfg)
    if cfg.data.name not in CifarResNet.data_sets or count != 1:
        raise UserError(f"model.compile={STEP_GRAPH} captures one device's whole training iteration, drawing its batch "
                        f"from the data set held on the device: CIFAR (data=cifar10 or cifar100) on one device; this "
                        f"run has data={cfg.data.name} on {count} processes. Use model.compile=false or "
                        "reduce-overhead there.")


def validate(cfg: DictConfig) -> None:
    """A classification run's config."""
    _check_model(cfg)
    _check_step_graph(cfg)
    check_shortcut(cfg.model.shortcut)
    if "stride_on" in cfg.model:
        check_stride_on(cfg.model.stride_on)
    validate_run(cfg)
    _check_bn_batch(cfg)
    _check_monitor(cfg)


def validate_run(cfg: DictConfig) -> None:
    """What every task's run config must hold: positive sizes and counts, the collector's policy, the schedule's
    milestones inside the run, and a known resume value."""
    for key in ("data.batch_size", "data.eval_batch_size", "optimizer.lr", "trainer.max_steps",
                "trainer.val_check_interval", "trainer.log_every_n_steps", "checkpoint.every_n_steps",
                "gc.every_n_steps"):
        _positive(cfg, key)
    if not isinstance(cfg.gc.manual, bool):
        raise UserError(f"gc.manual={cfg.gc.manual!r} must be true (automatic collection off while training, "
                        "collections at evaluation, checkpoints and every gc.every_n_steps iterations) or false "
                        "(Python's own collector).")
    if "milestones" in cfg.schedule:  # the plateau schedule finds its own
        milestone_steps(cfg.schedule.milestones, cfg.trainer.max_steps)
    if cfg.get("resume", "restart") != "restart":
        raise UserError(f"resume={cfg.resume!r} is unknown; the one value is restart: +resume=restart lets a run whose "
                        "checkpoints are all damaged train again from iteration 0 (without it such a run stops).")


def _check_monitor(cfg: DictConfig) -> None:
    """A plateau schedule reads an error that the run evaluates: val/ exists only with held-out images."""
    monitor = OmegaConf.select(cfg, "schedule.monitor")
    if monitor is None:
        return
    evaluated = ["val", "test"] if OmegaConf.select(cfg, "data.val_size", default=0) > 0 else ["test"]
    if monitor.split("/")[0] not in evaluated:
        raise UserError(f"schedule.monitor={monitor} reads an error this run does not evaluate (it evaluates "
                        f"{', '.join(evaluated)}): val/ is the training images held out of training, set "
                        "data.val_size=N to hold them out (e.g. 50000 on ImageNet).")


def check_data(cfg: DictConfig) -> None:
    """The data set is where the config says (its DataModule's constructor reads nothing; check_files looks)."""
    instantiate(cfg.data).check_files()
