"""Which runs may train as one network (a pack): what the launcher needs to group a sweep's jobs, from their
configs alone (no torch: the launcher plugins run in every Hydra app).

Runs may share a network when they are CIFAR nets of one depth, shortcut option, data, batch size, optimiser
settings, schedule and trainer, on one device, and differ only in the member keys: each member keeps its own seed,
data order and augmentation draws, shortcut switch (plain or residual) and learning rate."""
import json

from omegaconf import DictConfig, OmegaConf

from deepres.runs.run_dir import RunDir

# keys in which the members of a pack may differ (data.seed follows seed unless set apart; name follows the net)
MEMBER_KEYS = ("seed", "data.seed", "model.residual", "optimizer.lr", "schedule.lr", "name", "logger")
PACKABLE_DATA = ("cifar10", "cifar100")  # the data sets whose DataModule draws one stream per member
# the optimisers that have a packed form (one update of all members, each with its own lr): _target_ -> packed form
PACKED_OPTIMIZERS = {"torch.optim.SGD": "deepres.packing.optimizer.PackedSGD"}
SGD_SETTINGS = ("momentum", "dampening", "weight_decay", "nesterov")  # shared by a pack's members
SGD_KEYS = {"_target_", "_partial_", "lr", "fused", "foreach", *SGD_SETTINGS}  # fused/foreach: how, not what


def pack_key(cfg: DictConfig) -> str | None:
    """What runs that may share a network have in common (a string), or None for a run that trains alone: another
    data set (and so another net), more than one device, an optimiser without a packed form or with settings it does
    not take, activation checkpointing."""
    def get(key: str, default=None):
        return OmegaConf.select(cfg, key, default=default)

    if (get("data.name") not in PACKABLE_DATA or get("optimizer._target_") not in PACKED_OPTIMIZERS
            or set(cfg.optimizer) - SGD_KEYS or get("model.checkpoint_activations")
            or get("trainer.devices", 1) != 1 or get("trainer.num_nodes", 1) != 1):
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


def launch_key(cfg: DictConfig) -> tuple[str, int] | None:
    """The packed launchers' pack_key (conf/hydra/launcher/packed.yaml): runs pack when they may share a network and
    stand at the same iteration (an interrupted pack resumes as one); `cfg` is a job's config, its output directory
    set. None: the run trains alone."""
    key = pack_key(cfg)
    return None if key is None else (key, RunDir(cfg.hydra.runtime.output_dir).resume_step())
