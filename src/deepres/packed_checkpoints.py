"""A pack keeps no checkpoint of its own: each save writes every live member's checkpoint, in the format of a single
run's (net weights under the single net's names, SGD momentum, schedule, metric rows, Lightning's loop state), into
the member's own run directory. A pack resumes from its members' checkpoints merged back into one, so a run started
in a pack can go on alone, in another pack, or in the same one."""
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deepres.checkpointing import AtomicCheckpointIO
from deepres.models.packed import member_state, packed_state

PER_MEMBER = ("state_dict", "optimizer_states", "schedule", "metric_rows")


@dataclass
class MemberLayout:
    """What a member's single-run checkpoint holds, taken from its single net and its torch.optim.SGD."""

    state_keys: list[str]  # the Classifier's state dict keys, in its order: train_sums, net.*
    param_names: list[str]  # the net's parameters, in the order its optimiser holds them
    param_group: dict  # the optimiser's param group, less lr and params

    @classmethod
    def of(cls, net: nn.Module, optimizer: torch.optim.Optimizer) -> "MemberLayout":
        group = {k: v for k, v in optimizer.state_dict()["param_groups"][0].items() if k not in ("lr", "params")}
        return cls(["train_sums"] + [f"net.{key}" for key in net.state_dict()],
                   [f"net.{name}" for name, _ in net.named_parameters()], group)


def split(checkpoint: dict, layouts: Sequence[MemberLayout], module: nn.Module,
          members: Sequence[int]) -> dict[int, dict]:
    """The single-run checkpoints of `members` (indices into layouts) from the pack's checkpoint."""
    count, position = len(layouts), {name: j for j, (name, _) in enumerate(module.named_parameters())}
    optimizer = checkpoint["optimizer_states"][0]
    shared = {key: value for key, value in checkpoint.items() if key not in PER_MEMBER}
    out = {}
    for k in members:
        layout = layouts[k]
        state = {}
        for i, name in enumerate(layout.param_names):
            buf = optimizer["state"].get(position[name], {}).get("momentum_buffer")
            if buf is not None:
                state[i] = {"momentum_buffer": buf.unflatten(0, (count, -1))[k].clone()}
        group = {**layout.param_group, "lr": optimizer["param_groups"][0]["lrs"][k],
                 "params": list(range(len(layout.param_names)))}
        out[k] = {**shared, "state_dict": member_state(checkpoint["state_dict"], k, count, layout.state_keys),
                  "optimizer_states": [{"state": state, "param_groups": [group]}],
                  "schedule": checkpoint["schedule"][k], "metric_rows": checkpoint["metric_rows"][k]}
    return out


def merge(checkpoints: Sequence[dict], layouts: Sequence[MemberLayout], module: nn.Module,
          param_group: dict) -> dict:
    """The pack's checkpoint from its members' (all at the same iteration); `param_group` is PackedSGD's, less
    lrs and params."""
    params = list(module.named_parameters())
    positions = [{name: i for i, name in enumerate(layout.param_names)} for layout in layouts]
    state = {}
    for j, (name, param) in enumerate(params):
        bufs = [ckpt["optimizer_states"][0]["state"].get(position.get(name), {}).get("momentum_buffer")
                for ckpt, position in zip(checkpoints, positions)]
        if any(buf is not None for buf in bufs):
            zeros = torch.zeros_like(param.detach().unflatten(0, (len(layouts), -1))[0], device="cpu")
            state[j] = {"momentum_buffer": torch.cat([zeros if buf is None else buf for buf in bufs])}
    group = {**param_group, "lrs": [c["optimizer_states"][0]["param_groups"][0]["lr"] for c in checkpoints],
             "params": list(range(len(params)))}
    shared = {key: value for key, value in checkpoints[0].items() if key not in PER_MEMBER}
    template = {key: value.cpu() for key, value in module.state_dict().items()}
    return {**shared, "state_dict": packed_state([c["state_dict"] for c in checkpoints], template),
            "optimizer_states": [{"state": state, "param_groups": [group]}],
            "schedule": [c["schedule"] for c in checkpoints], "metric_rows": [c["metric_rows"] for c in checkpoints]}


class PackCheckpointIO(AtomicCheckpointIO):
    """Saves the members' checkpoints, not the pack's: `members(checkpoint)` gives each live member's checkpoint
    directory and checkpoint; each is written atomically under the file name Lightning asked for."""

    def __init__(self, members: Callable[[dict], list[tuple[Path, dict]]]):
        super().__init__()
        self.members = members

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        for directory, member in self.members(checkpoint):
            super().save_checkpoint(member, Path(directory) / Path(path).name)
