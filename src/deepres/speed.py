"""The speed switches, in one place. Each is a config key, measured in benchmarks/ and can be turned off; the
defaults turn on only what is safe: on CUDA bf16 autocast, channels_last and cudnn autotuning, on CPU none of them,
so a CPU run stays fp32 and repeatable to the bit.

  trainer.precision             bf16-mixed on CUDA, else 32-true (the `if_cuda` resolver); any Lightning precision
  trainer.benchmark             cudnn autotuning on CUDA (set it false with trainer.deterministic=true)
  model.channels_last           NHWC weights, so convolutions run channels-last (tensor cores' layout)
  model.compile                 false, true (torch.compile's default mode) or a mode: reduce-overhead = CUDA graphs
  model.checkpoint_activations  recompute each block in the backward pass: a net argument (models/blocks.py)

model.compile stays off by default: on the H100 of ../shared/GPU.md the default mode is slower than eager for the
CIFAR nets, and CUDA graphs, the mode that wins there, take over a minute to compile ResNet-110."""
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deepres.errors import UserError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# keys of the model config that are switches applied to the built net, not arguments of its constructor
NET_SWITCHES = ("channels_last", "compile")


def uses_cuda(accelerator: str) -> bool:
    """Whether a Trainer with this `trainer.accelerator` trains on a CUDA device."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def if_cuda(accelerator: str, on_cuda: Any, otherwise: Any) -> Any:
    """The `${if_cuda:${trainer.accelerator},A,B}` resolver: A when the run trains on CUDA, else B."""
    return on_cuda if uses_cuda(accelerator) else otherwise


def compile_mode(value: bool | str | None) -> str | None:
    """The torch.compile mode of a `model.compile` value; None when off."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if value not in COMPILE_MODES:
        raise UserError(f"model.compile={value!r} is not a torch.compile setting; valid: false, true (default mode), "
                        f"{', '.join(COMPILE_MODES[1:])} (reduce-overhead: CUDA graphs).")
    return value


def constructor_config(model_cfg: Mapping) -> dict:
    """The model config without the net switches: what the net's constructor takes. Every place that builds a net
    from a run's config goes through here."""
    return {key: model_cfg[key] for key in model_cfg if key not in NET_SWITCHES}


def prepare(net: nn.Module, model_cfg: Mapping) -> nn.Module:
    """Apply model.channels_last and model.compile to the built net, in place. nn.Module.compile keeps the state
    dict's keys, so checkpoints load into an uncompiled net."""
    mode = compile_mode(model_cfg.get("compile", False))
    if model_cfg.get("channels_last", False):
        net.to(memory_format=torch.channels_last)
    if mode is not None:
        net.compile(mode=mode)
    return net
