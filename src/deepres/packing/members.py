"""A pack: K runs trained as one network (models/blocks.py with members=K), one optimiser (PackedSGD), and each
run's checkpoint in the format of a run trained alone. A pack of one is an ordinary run: its own net and optimiser,
its checkpoint as it is; so every run is trained and checkpointed by the same code.

Every tensor of the packed net has the name of the single net's and holds the K members' tensors along dim 0, so
`member_state(packed, k)` is member k's state dict as its single net has it, and `packed_state` the way back. A pack
keeps no checkpoint of its own: each save writes every live member's checkpoint (net weights under the single net's
names, SGD momentum, schedule, metric rows, Lightning's loop state) into the member's run directory, and a pack
resumes from its members' checkpoints merged, so a run started in a pack can go on alone, or in another pack."""
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from deepres.models import build, construct, initialised
from deepres.packing.optimizer import PackedSGD
from deepres.packing.plan import SGD_SETTINGS

PER_MEMBER = ("state_dict", "optimizer_states", "schedule", "metric_rows")


def _slice(tensor: torch.Tensor, member: int, members: int) -> torch.Tensor:
    """Member's part of a packed tensor, a view (checkpoints are saved compacted: training/checkpoints.on_host);
    one member's is all."""
    if members == 1 or not tensor.dim():
        return tensor
    return tensor.unflatten(0, (members, -1))[member]


def member_state(packed: Mapping[str, torch.Tensor], member: int, members: int,
                 keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Member's tensors of a packed state dict, under the single net's `keys` (a plain net has no shortcut keys)."""
    return {key: _slice(packed[key], member, members) for key in keys}


def packed_state(states: Sequence[Mapping[str, torch.Tensor]],
                 template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The packed state dict of the members' single-net states; what a member lacks (the shortcut projection of a
    plain net) comes from `template`, the packed net's own state."""
    members, out = len(states), {}
    for key, like in template.items():
        if not like.dim():
            out[key] = states[0][key] if key in states[0] else like
            continue
        parts = like.unflatten(0, (members, -1))
        out[key] = torch.cat([s[key] if key in s else parts[k] for k, s in enumerate(states)])
    return out


@torch.no_grad()
def freeze_member(net: nn.Module, member: int, members: int) -> None:
    """Zero member's weights and BN statistics: a frozen (diverged) member then computes zeros, never NaN."""
    for tensor in net.state_dict().values():
        if tensor.dim():
            tensor.unflatten(0, (members, -1))[member].zero_()


@dataclass
class MemberLayout:
    """What a member's checkpoint holds, taken from its single net and its torch.optim.SGD."""

    state_keys: list[str]  # the LightningModule's state dict keys, in its order: train_sums, net.*
    param_names: list[str]  # the net's parameters, in the order its optimiser holds them
    param_group: dict  # the optimiser's param group, less lr and params

    @classmethod
    def of(cls, net: nn.Module, optimizer: torch.optim.Optimizer) -> "MemberLayout":
        group = {k: v for k, v in optimizer.state_dict()["param_groups"][0].items() if k not in ("lr", "params")}
        return cls(["train_sums"] + [f"net.{key}" for key in net.state_dict()],
                   [f"net.{name}" for name, _ in net.named_parameters()], group)


class Pack:
    """The net and optimiser of K runs (their composed configs, which pack_key found alike but for the member
    keys), each member's net initialised as its run alone initialises it (its seed, then the constructor)."""

    def __init__(self, cfgs: Sequence[DictConfig], num_classes: int):
        self.members, model = len(cfgs), cfgs[0].model
        singles = []
        for cfg in cfgs:
            L.seed_everything(cfg.seed, verbose=False)
            singles.append(build(cfg.model, num_classes) if self.members == 1 else
                           initialised(construct(cfg.model, num_classes), cfg.model))
        optimizers = [instantiate(cfg.optimizer) for cfg in cfgs]
        self.layouts = [MemberLayout.of(net, make(net.parameters())) for net, make in zip(singles, optimizers)]
        if self.members == 1:
            self.net, self.optimizer = singles[0], optimizers[0]
            return
        self.net = build(model, num_classes, residual=[cfg.model.residual for cfg in cfgs])
        self.net.load_state_dict(packed_state([single.state_dict() for single in singles], self.net.state_dict()))
        self.optimizer = functools.partial(PackedSGD, lrs=[cfg.optimizer.lr for cfg in cfgs],
                                           **{k: v for k, v in cfgs[0].optimizer.items() if k in SGD_SETTINGS})
        # PackedSGD's param group less lrs and params, for merging (before the Trainer makes the optimiser)
        group = self.optimizer(self.net.parameters()).state_dict()["param_groups"][0]
        self.param_group = {k: v for k, v in group.items() if k not in ("lrs", "params")}

    def freeze(self, member: int) -> None:
        freeze_member(self.net, member, self.members)

    def split(self, checkpoint: dict, module: nn.Module, members: Sequence[int]) -> dict[int, dict]:
        """The single-run checkpoints of `members` (indices) from the pack's; `module`: the LightningModule."""
        shared = {key: value for key, value in checkpoint.items() if key not in PER_MEMBER}
        out = {}
        for k in members:
            out[k] = {**shared,
                      "state_dict": member_state(checkpoint["state_dict"], k, self.members, self.layouts[k].state_keys),
                      "optimizer_states": self._member_optimizer(checkpoint["optimizer_states"], module, k),
                      "schedule": checkpoint["schedule"][k], "metric_rows": checkpoint["metric_rows"][k]}
        return out

    def merge(self, checkpoints: Sequence[dict], module: nn.Module) -> dict:
        """The pack's checkpoint from its members' (all at the same iteration)."""
        template = {key: value.cpu() for key, value in module.state_dict().items()}
        shared = {key: value for key, value in checkpoints[0].items() if key not in PER_MEMBER}
        return {**shared, "state_dict": packed_state([c["state_dict"] for c in checkpoints], template),
                "optimizer_states": self._packed_optimizer([c["optimizer_states"] for c in checkpoints], module),
                "schedule": [c["schedule"] for c in checkpoints],
                "metric_rows": [c["metric_rows"] for c in checkpoints]}

    def _member_optimizer(self, states: list[dict], module: nn.Module, k: int) -> list[dict]:
        """Member k's torch.optim.SGD state from PackedSGD's (a run alone: its optimiser's state as it is)."""
        if self.members == 1:
            return states
        layout, packed = self.layouts[k], states[0]
        position = {name: j for j, (name, _) in enumerate(module.named_parameters())}
        state = {}
        for i, name in enumerate(layout.param_names):
            buf = packed["state"].get(position[name], {}).get("momentum_buffer")
            if buf is not None:
                state[i] = {"momentum_buffer": _slice(buf, k, self.members)}
        group = {**layout.param_group, "lr": packed["param_groups"][0]["lrs"][k],
                 "params": list(range(len(layout.param_names)))}
        return [{"state": state, "param_groups": [group]}]

    def _packed_optimizer(self, members: list[list[dict]], module: nn.Module) -> list[dict]:
        """PackedSGD's state from its members' torch.optim.SGD states (a run alone: its own)."""
        if self.members == 1:
            return members[0]
        params = list(module.named_parameters())
        positions = [{name: i for i, name in enumerate(layout.param_names)} for layout in self.layouts]
        state = {}
        for j, (name, param) in enumerate(params):
            bufs = [states[0]["state"].get(position.get(name), {}).get("momentum_buffer")
                    for states, position in zip(members, positions)]
            if any(buf is not None for buf in bufs):
                zeros = torch.zeros_like(param.detach().unflatten(0, (self.members, -1))[0], device="cpu")
                state[j] = {"momentum_buffer": torch.cat([zeros if buf is None else buf for buf in bufs])}
        group = {**self.param_group, "lrs": [states[0]["param_groups"][0]["lr"] for states in members],
                 "params": list(range(len(params)))}
        return [{"state": state, "param_groups": [group]}]
