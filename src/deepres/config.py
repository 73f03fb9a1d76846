"""OmegaConf resolvers used by conf/: run names in the paper's words, where a run or sweep lives, and the defaults
that depend on whether a run trains on CUDA."""
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


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


def uses_cuda(accelerator: str) -> bool:
    """Whether a Trainer with this `trainer.accelerator` trains on a CUDA device."""
    import torch  # here, not at the top: the launcher plugins read configs without loading torch

    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def if_cuda(accelerator: str, on_cuda: Any, otherwise: Any) -> Any:
    """The `${if_cuda:${trainer.accelerator},A,B}` resolver: A when the run trains on CUDA, else B (the speed
    defaults: bf16 autocast, channels_last and cudnn autotuning on CUDA; fp32, contiguous and repeatable on CPU)."""
    return on_cuda if uses_cuda(accelerator) else otherwise


def register_resolvers() -> None:
    resolvers = {"net_name": net_name, "sweep_name": sweep_name, "or_default": lambda value: value or "default",
                 "if_cuda": if_cuda}
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
