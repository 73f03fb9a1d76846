"""Public checkpoints into the paper's nets (model.weights=PATH, model.weights_format=FORMAT):

  deepres      a run's checkpoint (checkpoints/final.ckpt or last.ckpt) or a bare state dict of the same net
  torchvision  a torchvision ResNet's state dict, into ImageNetResNet(depth, shortcut="B") (stride_on="3x3" for
               50+ layers: torchvision's v1.5): a renaming of keys
  akamaster    a CIFAR checkpoint in the layout of the most used CIFAR reproduction (akamaster/pytorch_resnet_cifar10:
               option A, `module.` keys of DataParallel, {"state_dict": ...}), into CifarResNet(depth, shortcut="A")

The CIFAR reproduction's option A pads the new channels with zeros on both sides of the identity (planes/4 before,
planes/4 after); ours pads them after it. Both nets are the same function once the residual stream's channels of
stages 2 and 3 are permuted: each stage's channel c of ours is its channel PERM[c] (`_stream_orders`), applied to
every layer that writes the stream (conv2/bn2 of each block) or reads it (the next block's conv1, the FC layer)."""
import re
from pathlib import Path

import torch
from torch import nn

from deepres.errors import RefusedFile, UserError
from deepres.safe_files import load_torch

FORMATS = ("deepres", "torchvision", "akamaster")
_TORCHVISION_NAMES = ((r"^conv1\.", "stem.0."), (r"^bn1\.", "stem.1."), (r"\.downsample\.", ".shortcut."))
_BN = ("weight", "bias", "running_mean", "running_var")


def from_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict, renamed for ImageNetResNet(depth, shortcut="B") of the same depth
    (stride_on="3x3" for 50+, torchvision's v1.5)."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, name in _TORCHVISION_NAMES:
            key = re.sub(pattern, name, key)
        renamed[re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.", key)] = value
    return renamed


def _stream_orders(widths: tuple[int, ...]) -> list[torch.Tensor]:
    """Per stage, the reproduction's channel of each of our residual-stream channels: ours keep the previous stage's
    stream first and pad after it; theirs pad width/4 channels before and after it."""
    orders = [torch.arange(widths[0])]
    for previous, width in zip(widths, widths[1:]):
        before = (width - previous) // 2
        padding = [c for c in range(width) if not before <= c < before + previous]
        orders.append(torch.cat([before + orders[-1], torch.tensor(padding)]))
    return orders


def from_akamaster(state_dict: dict[str, torch.Tensor], widths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The reproduction's CIFAR ResNet state dict, renamed and permuted for CifarResNet(depth, shortcut="A")."""
    theirs = {key.removeprefix("module."): value for key, value in state_dict.items()}
    orders = _stream_orders(widths)
    ours = {}
    for key, value in theirs.items():
        name = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.", key)
        name = re.sub(r"^conv1\.", "stem.0.", re.sub(r"^bn1\.", "stem.1.", re.sub(r"^linear\.", "fc.", name)))
        ours[name] = value
    stages = sorted({int(k.split(".")[1]) for k in ours if k.startswith("stages.")})
    for s in stages:
        order, blocks = orders[s], sorted({int(k.split(".")[2]) for k in ours if k.startswith(f"stages.{s}.")})
        for b in blocks:
            block = f"stages.{s}.{b}"
            ours[f"{block}.conv2.weight"] = ours[f"{block}.conv2.weight"][order]
            for field in _BN:
                ours[f"{block}.bn2.{field}"] = ours[f"{block}.bn2.{field}"][order]
            reads = orders[s] if b > 0 else orders[s - 1] if s > 0 else orders[0]  # the stream it reads
            ours[f"{block}.conv1.weight"] = ours[f"{block}.conv1.weight"][:, reads]
    ours["fc.weight"] = ours["fc.weight"][:, orders[stages[-1]]]
    return ours


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, loaded as data (safe_files.py): public checkpoints hold no code."""
    try:
        state = load_torch(path, name=f"model.weights={path}")
    except FileNotFoundError:
        raise UserError(f"model.weights={path}: no such file.") from None
    except RefusedFile:
        raise
    except Exception as err:  # a corrupt or foreign file: pickle, zip and torch errors alike
        raise UserError(f"model.weights={path} is not a readable PyTorch checkpoint ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else 'no detail'}).") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.weights={path} holds no state dict (a dict of tensors, or {{'state_dict': ...}}).")
    return state


def load_weights(net: nn.Module, path: str | Path, weights_format: str) -> nn.Module:
    """The checkpoint's weights in `net` (every tensor in its place: strict), converted from `weights_format`."""
    if weights_format not in FORMATS:
        raise UserError(f"model.weights_format={weights_format!r} is unknown; valid: {', '.join(FORMATS)}.")
    state = read_state_dict(Path(path).expanduser())
    if weights_format == "deepres":
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")} or state
    elif weights_format == "torchvision":
        state = from_torchvision(state)
    else:
        state = from_akamaster(state, tuple(stage[0].conv2.out_channels for stage in net.stages))
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"model.weights={path} (model.weights_format={weights_format}) does not fit this net "
                        f"({type(net).__name__}, model.depth, model.shortcut and model.stride_on as configured): "
                        f"{first}") from None
    return net
