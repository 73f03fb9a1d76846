"""OmegaConf resolvers used by conf/: run names in the paper's words, where a run or sweep lives, and the defaults
that depend on whether a run trains on CUDA."""
import hashlib
import re
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


def net_name(residual: bool, depth: int) -> str:
    """`resnet-56` or `plain-56`: how the paper names its nets, and how W&B runs are named."""
    return f"{'resnet' if residual else 'plain'}-{depth}"


def backbone_name(backbone: str, residual: bool, depth: int) -> str:
    """A detector's run name after its backbone: `vgg-16`, or the ImageNet net's, `resnet-101` / `plain-101`."""
    return "vgg-16" if backbone == "vgg16" else net_name(residual, depth)


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_name() -> str:
    """The W&B group: the sweep directory's name, so that the runs of one sweep share a group."""
    if is_multirun():
        return Path(HydraConfig.get().sweep.dir).name
    return "single-runs"


NAME_MAX = 255  # bytes in a file name (ext4, xfs, most file systems)
KEEP = 200  # bytes of the overrides a shortened name keeps before its hash


def run_dirname(override_dirname: str) -> str:
    """A run directory's name from its sorted overrides, one spelling per run whatever way its values were given
    (a command-line sweep writes True, a sweep file or a single run true), "default" for none, and a name over the
    file system's limit cut with a hash of the whole, so that the same command finds the same directory (the full
    overrides are in the run's .hydra/overrides.yaml and status.json)."""
    name = re.sub(r"=(True|False)(?=,|$)", lambda m: "=" + m[1].lower(), override_dirname) or "default"
    if len(name.encode()) <= NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name.encode()[:KEEP].decode(errors='ignore')}...{digest}"


def uses_cuda(accelerator: str) -> bool:
    """Whether a Trainer with this `trainer.accelerator` trains on a CUDA device."""
    import torch  # here, not at the top: the launcher plugins read configs without loading torch

    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def if_cuda(accelerator: str, on_cuda: Any, otherwise: Any) -> Any:
    """The `${if_cuda:${trainer.accelerator},A,B}` resolver: A when the run trains on CUDA, else B (the speed
    defaults: bf16 autocast, channels_last and cudnn autotuning on CUDA; fp32, contiguous and repeatable on CPU)."""
    return on_cuda if uses_cuda(accelerator) else otherwise


def register_resolvers() -> None:
    resolvers = {"net_name": net_name, "backbone_name": backbone_name, "sweep_name": sweep_name,
                 "run_dirname": run_dirname, "if_cuda": if_cuda}
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
