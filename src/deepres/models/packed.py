"""K CIFAR nets of one depth and shortcut option trained as ONE net of grouped layers (packed runs).

Group k of every conv, BN and classifier belongs to member k, and member k's images enter channels 3k..3k+2; the
groups never mix, so one SGD step on the packed net is a step of each of the K nets. Every parameter and buffer
of the packed net has the name of the single net's and holds the K members' tensors concatenated along dim 0, so
`member_state(packed, k)` is member k's state dict as CifarResNet has it, and `packed_state` the way back.

Plain and residual members share a pack: a block adds its shortcut only in the groups of residual members. Option
A's zero-padded channels stay inside each group. Under option B or C the projections of plain members exist in the
packed net (a plain net has none) but never reach an output, and are not part of the member's state."""
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepres.models.blocks import check_shortcut, he_init
from deepres.models.cifar import STAGE_WIDTHS, depth_to_n


def grouped_conv(members: int, in_planes: int, out_planes: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(members * in_planes, members * out_planes, kernel, stride=stride, padding=kernel // 2,
                     groups=members, bias=False)


class GroupedLinear(nn.Module):
    """K linear layers side by side: (B, K * in) -> (B, K, out); weight (K * out, in) as K single weights stacked."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.members = members
        self.weight = nn.Parameter(torch.zeros(members * out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(members * out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(1, (self.members, -1))
        weight = self.weight.unflatten(0, (self.members, -1))
        return torch.einsum("bki,koi->bko", x, weight) + self.bias.unflatten(0, (self.members, -1))


class GroupedZeroPad(nn.Module):
    """Option A per group: subsample by `stride`, append zero channels to each member's own channels."""

    def __init__(self, members: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.members, self.stride, self.extra = members, stride, out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride].unflatten(1, (self.members, -1))
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)).flatten(1, 2)


def grouped_shortcut(kind: str, members: int, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """make_shortcut of blocks.py, K times side by side."""
    same_shape = stride == 1 and in_planes == out_planes
    if kind == "C" or (kind == "B" and not same_shape):
        return nn.Sequential(grouped_conv(members, in_planes, out_planes, 1, stride),
                             nn.BatchNorm2d(members * out_planes))
    if same_shape:
        return nn.Identity()
    return GroupedZeroPad(members, in_planes, out_planes, stride)


class PackedBasicBlock(nn.Module):
    """BasicBlock for K members; the shortcut is added in the channels of the residual members only."""

    def __init__(self, residual: Sequence[bool], in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        k = len(residual)
        self.conv1, self.bn1 = grouped_conv(k, in_planes, planes, 3, stride), nn.BatchNorm2d(k * planes)
        self.conv2, self.bn2 = grouped_conv(k, planes, planes, 3), nn.BatchNorm2d(k * planes)
        self.shortcut = grouped_shortcut(shortcut, k, in_planes, planes, stride) if any(residual) else None
        mask = torch.tensor(residual).repeat_interleave(planes)[None, :, None, None]
        self.register_buffer("residual_channels", None if all(residual) else mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            added = out + self.shortcut(x)
            out = added if self.residual_channels is None else torch.where(self.residual_channels, added, out)
        return F.relu(out)


class PackedCifarResNet(nn.Module):
    """len(residual) CifarResNets of `depth` layers (member k residual or plain as residual[k]) in one net:
    input (B, 3K, 32, 32), member k's batch in channels 3k..3k+2; output (B, K, num_classes)."""

    def __init__(self, depth: int, residual: Sequence[bool], shortcut: str = "A", num_classes: int = 10):
        super().__init__()
        check_shortcut(shortcut)
        n, k = depth_to_n(depth), len(residual)
        self.residual = list(residual)
        self.stem = nn.Sequential(grouped_conv(k, 3, STAGE_WIDTHS[0], 3), nn.BatchNorm2d(k * STAGE_WIDTHS[0]),
                                  nn.ReLU(inplace=True))
        stages, in_planes = [], STAGE_WIDTHS[0]
        for i, planes in enumerate(STAGE_WIDTHS):
            stages.append(nn.Sequential(*(
                PackedBasicBlock(residual, in_planes if j == 0 else planes, planes, 2 if i and j == 0 else 1,
                                 shortcut) for j in range(n))))
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = GroupedLinear(k, in_planes, num_classes)
        he_init(self)

    @property
    def members(self) -> int:
        return len(self.residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))

    @torch.no_grad()
    def freeze(self, member: int) -> None:
        """Zero member's weights and BN statistics: a frozen (diverged) member then computes zeros, never NaN."""
        for tensor in self.state_dict().values():
            if tensor.dim():
                tensor.unflatten(0, (self.members, -1))[member].zero_()


def member_state(packed: Mapping[str, torch.Tensor], member: int, members: int,
                 keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Member's tensors of a packed state dict, under the single net's `keys` (a plain net has no shortcut keys)."""
    return {key: packed[key].unflatten(0, (members, -1))[member].clone() if packed[key].dim() else packed[key].clone()
            for key in keys}


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
