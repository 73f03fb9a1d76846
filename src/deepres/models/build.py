"""A run's net from its model config: the constructor's arguments, then the net switches applied to the built net.

  model.bn_batch       BN statistics over groups of that many images of a batch in training (ghost_bn.py); null:
                       over the whole batch
  model.channels_last  NHWC weights, so convolutions run channels-last (tensor cores' layout); on with CUDA
  model.compile        false, true (torch.compile's default mode) or a mode: reduce-overhead = CUDA graphs;
                       step_graph: the net stays eager, and the whole training iteration is one CUDA graph
                       (training/step_graph.py)

The other speed switches are the Trainer's (trainer.precision, trainer.benchmark: conf/trainer/default.yaml) or the
net's own argument (model.checkpoint_activations: blocks.py). model.compile stays off by default: on an H100
(benchmarks/results/reference_h100.md) the default mode is slower than eager for the CIFAR nets, and CUDA graphs,
the mode that wins there, take over a minute to compile ResNet-110."""
from collections.abc import Mapping

import torch
from hydra.utils import instantiate
from torch import nn

from deepres.errors import UserError
from deepres.models.ghost_bn import ghost_batch_norm

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
STEP_GRAPH = "step_graph"  # not torch.compile: the training step captured as a whole
# keys of the model config that are applied to the built net, not arguments of its constructor
NET_SWITCHES = ("bn_batch", "channels_last", "compile", "weights", "weights_format")


def compile_mode(value: bool | str | None) -> str | None:
    """The torch.compile mode of a `model.compile` value; None when off (or step_graph: the net stays eager)."""
    if value is None or value is False or value == STEP_GRAPH:
        return None
    if value is True:
        return "default"
    if value not in COMPILE_MODES:
        raise UserError(f"model.compile={value!r} is not a torch.compile setting; valid: false, true (default mode), "
                        f"{', '.join(COMPILE_MODES[1:])} (reduce-overhead: CUDA graphs), {STEP_GRAPH} (the whole "
                        "training iteration as one CUDA graph).")
    return value


def construct(model_cfg: Mapping, num_classes: int, **args) -> nn.Module:
    """The net of a model config, as its constructor makes it (no switches): for loading weights, counting
    parameters, packing. `args` override the config's (residual=[...] for several members)."""
    return instantiate({key: model_cfg[key] for key in model_cfg if key not in NET_SWITCHES}, num_classes=num_classes,
                       **args)


def apply_switches(net: nn.Module, model_cfg: Mapping) -> nn.Module:
    """model.bn_batch, model.channels_last and model.compile, in place. Neither changes the state dict's keys (nor
    does nn.Module.compile), so checkpoints load into a net without them."""
    mode = compile_mode(model_cfg.get("compile", False))
    if model_cfg.get("bn_batch"):
        net = ghost_batch_norm(net, model_cfg["bn_batch"])
    if model_cfg.get("channels_last", False):
        net.to(memory_format=torch.channels_last)
    if mode is not None:
        net.compile(mode=mode)
    return net


def initialised(net: nn.Module, model_cfg: Mapping) -> nn.Module:
    """The net with the weights of model.weights (models/public_weights.py), if set: a run starts from them (and
    resumes from its own checkpoint)."""
    if model_cfg.get("weights"):
        from deepres.models.public_weights import load_weights

        load_weights(net, model_cfg["weights"], model_cfg.get("weights_format", "deepres"))
    return net


def build(model_cfg: Mapping, num_classes: int, **args) -> nn.Module:
    """The net a run trains: constructed (a single net: from model.weights, if set), then switched."""
    net = construct(model_cfg, num_classes, **args)
    return apply_switches(net if args else initialised(net, model_cfg), model_cfg)
