"""The block vocabulary shared by every net: 3x3/1x1 convs, shortcuts A/B/C, and the basic block.

A plain net is the residual net with the shortcut addition switched off (`residual=False`); it then has no
shortcut modules, as in the paper's plain baselines."""
import torch
import torch.nn.functional as F
from torch import nn

from deepres.errors import UserError

SHORTCUTS = ("A", "B", "C")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity that subsamples by `stride` and zero-pads the new channels (no parameters)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Options B and C: a strided 1x1 convolution followed by BN."""
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


def make_shortcut(kind: str, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """The shortcut of one block: A pads, B projects only where the shape changes, C projects everywhere."""
    check_shortcut(kind)
    same_shape = stride == 1 and in_planes == out_planes
    if kind == "C" or (kind == "B" and not same_shape):
        return projection(in_planes, out_planes, stride)
    if same_shape:
        return nn.Identity()
    return ZeroPadShortcut(in_planes, out_planes, stride)


def check_shortcut(kind: str) -> None:
    if kind not in SHORTCUTS:
        raise UserError(
            f"model.shortcut={kind!r} is not a shortcut option of the paper; valid options: A (identity, zero-padded "
            "channels where the size changes), B (1x1 projection only where the size changes), C (projection on "
            "every shortcut)."
        )


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut when residual, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, residual: bool):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.residual = residual
        self.shortcut = make_shortcut(shortcut, in_planes, planes, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


def he_init(module: nn.Module) -> None:
    """He (MSRA) init for convs, BN at identity: the paper's initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
