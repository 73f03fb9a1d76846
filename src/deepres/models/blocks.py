"""The block vocabulary shared by every net: 3x3/1x1 convs, shortcuts A/B/C, the basic and bottleneck blocks.

A plain net is the residual net with the shortcut addition switched off (`residual=False`); it then has no
shortcut modules, as in the paper's plain baselines."""
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from deepres.errors import UserError

SHORTCUTS = ("A", "B", "C")
STRIDE_ON = ("1x1", "3x3")


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


class Bottleneck(nn.Module):
    """1x1 (reduce) - 3x3 - 1x1 (expand x4), each conv followed by BN; ReLU after the first two and after the
    addition of the shortcut.

    Where a stage downsamples, the paper strides the first 1x1 conv (`stride_on="1x1"`); torchvision's "v1.5"
    strides the 3x3 (`stride_on="3x3"`): the same parameters, but the 3x3 then runs on 4x more positions."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, residual: bool,
                 stride_on: str = "1x1"):
        super().__init__()
        check_stride_on(stride_on)
        stride_1x1, stride_3x3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        out_planes = planes * self.expansion
        self.conv1, self.bn1 = conv1x1(in_planes, planes, stride_1x1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride_3x3), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = conv1x1(planes, out_planes), nn.BatchNorm2d(out_planes)
        self.residual = residual
        self.shortcut = make_shortcut(shortcut, in_planes, out_planes, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


def check_stride_on(where: str) -> None:
    if where not in STRIDE_ON:
        raise UserError(
            f"model.stride_on={where!r} is not a bottleneck variant; valid: 1x1 (the paper: the first 1x1 conv of a "
            "downsampling block has stride 2) or 3x3 (torchvision's ResNet v1.5: the 3x3 conv has it)."
        )


def stage(block: type[nn.Module], in_planes: int, planes: int, blocks: int, stride: int, shortcut: str,
          residual: bool, **block_args) -> nn.Sequential:
    """One stage: `blocks` blocks of width `planes`; the first one takes the stride (and any change of width)."""
    out_planes = planes * block.expansion
    return nn.Sequential(*(block(in_planes if i == 0 else out_planes, planes, stride if i == 0 else 1, shortcut,
                                 residual, **block_args) for i in range(blocks)))


class ResNet(nn.Module):
    """stem -> stages -> global average pool -> FC: every net of the paper. The first stage keeps the stem's
    resolution, each later one halves it at its first block. The pool makes the net fully convolutional."""

    def __init__(self, stem: nn.Module, stem_planes: int, block: type[nn.Module], widths: tuple[int, ...],
                 counts: tuple[int, ...], shortcut: str, residual: bool, num_classes: int,
                 checkpoint_activations: bool = False, **block_args):
        super().__init__()
        check_shortcut(shortcut)
        self.checkpoint_activations = checkpoint_activations  # see checkpointed(): less memory, more compute
        self.stem, stages, in_planes = stem, [], stem_planes
        for i, (planes, blocks) in enumerate(zip(widths, counts)):
            stages.append(stage(block, in_planes, planes, blocks, 1 if i == 0 else 2, shortcut, residual,
                                **block_args))
            in_planes = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.checkpoint_activations and torch.is_grad_enabled():
            x = checkpointed((block for stage in self.stages for block in stage), x)
        else:
            x = self.stages(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def checkpointed(blocks: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Run the blocks in turn, keeping only each block's input for the backward pass, which recomputes the rest:
    the activation memory of one block instead of all, for about a third more compute. The recomputation does not
    update BN's running statistics a second time, so training computes exactly what it computes without this."""
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False,
                       context_fn=lambda block=block: (nullcontext(), _bn_statistics_frozen(block)))
    return x


@contextmanager
def _bn_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """Let the recomputation update copies of BN's running statistics, and put the originals back."""
    buffers = [(m, name, buf) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for name, buf in m.named_buffers(recurse=False)]
    for m, name, buf in buffers:
        setattr(m, name, buf.clone())
    try:
        yield
    finally:
        for m, name, buf in buffers:
            setattr(m, name, buf)


def he_init(module: nn.Module) -> None:
    """He (MSRA) init for convs, BN at identity: the paper's initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
