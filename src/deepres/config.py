"""OmegaConf resolvers used by conf/: run names in the paper's words, and where a run or sweep lives."""
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from deepres.speed import if_cuda


def net_name(residual: bool, depth: int) -> str:
    """`resnet-56` or `plain-56`: how the paper names its nets, and how W&B runs are named."""
    return f"{'resnet' if residual else 'plain'}-{depth}"


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_name() -> str:
    """The W&B group: the sweep directory's name, so that the runs of one sweep share a group."""
    if is_multirun():
        return Path(HydraConfig.get().sweep.dir).name
    return "single-runs"


def register_resolvers() -> None:
    resolvers = {"net_name": net_name, "sweep_name": sweep_name, "or_default": lambda value: value or "default",
                 "if_cuda": if_cuda}
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
