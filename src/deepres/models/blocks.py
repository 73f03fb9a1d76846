"""The block vocabulary shared by every net: 3x3/1x1 convs, shortcuts A/B/C, the basic and bottleneck blocks, the
stage builder and the ResNet frame around them.

Each piece serves one net or K nets side by side (`members=K`, as torchvision's conv helpers take `groups`): group k
of every conv, BN and FC layer belongs to member k, so the members never mix, and every tensor keeps the single
net's name and holds the members' tensors concatenated along dim 0. With K=1 it is the ordinary net.

A plain net is the residual net with the shortcut addition switched off; a net of plain members only has no shortcut
modules, as in the paper's plain baselines. Members that differ (plain beside residual) share the shortcut modules,
and the addition is masked to the channels of the residual members."""
import functools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from deepres.errors import UserError

SHORTCUTS = ("A", "B", "C")
STRIDE_ON = ("1x1", "3x3")


def conv(in_planes: int, out_planes: int, kernel: int, stride: int = 1, members: int = 1) -> nn.Conv2d:
    """A bias-free kernel x kernel convolution that keeps the size at stride 1; one per member (groups)."""
    return nn.Conv2d(members * in_planes, members * out_planes, kernel, stride=stride, padding=kernel // 2,
                     groups=members, bias=False)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, members: int = 1) -> nn.Conv2d:
    return conv(in_planes, out_planes, 3, stride, members)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, members: int = 1) -> nn.Conv2d:
    return conv(in_planes, out_planes, 1, stride, members)


def batch_norm(planes: int, members: int = 1) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(members * planes)


class GroupedLinear(nn.Linear):
    """The FC layer: nn.Linear for one member; for K, K of them side by side, (B, K * in) -> (B, K, out), with the
    weight (K * out, in) of the K single weights stacked."""

    def __init__(self, in_features: int, out_features: int, members: int = 1):
        super().__init__(in_features, members * out_features)
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members == 1:
            return super().forward(x)
        weight = self.weight.unflatten(0, (self.members, -1))
        return torch.einsum("bki,koi->bko", x.unflatten(1, (self.members, -1)), weight) + \
            self.bias.unflatten(0, (self.members, -1))


class ZeroPadShortcut(nn.Module):
    """Option A: identity that subsamples by `stride` and zero-pads the new channels (no parameters), inside each
    member's own channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, members: int = 1):
        super().__init__()
        self.stride, self.extra, self.members = stride, out_planes - in_planes, members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        if x.stride(1) == 1 and x.shape[1] > 1:  # channels_last: pad in NHWC order, so the output stays NHWC
            nhwc = x.permute(0, 2, 3, 1).unflatten(-1, (self.members, -1))
            return F.pad(nhwc, (0, self.extra)).flatten(-2).permute(0, 3, 1, 2)
        b, _, h, w = x.shape
        # each member's channels as an image of its own (a view), padded at the end of its channels
        padded = F.pad(x.reshape(b * self.members, -1, h, w), (0, 0, 0, 0, 0, self.extra))
        return padded.reshape(b, -1, h, w)


def projection(in_planes: int, out_planes: int, stride: int, members: int = 1) -> nn.Sequential:
    """Options B and C: a strided 1x1 convolution followed by BN."""
    return nn.Sequential(conv1x1(in_planes, out_planes, stride, members), batch_norm(out_planes, members))


def make_shortcut(kind: str, in_planes: int, out_planes: int, stride: int, members: int = 1) -> nn.Module:
    """The shortcut of one block: A pads, B projects only where the shape changes, C projects everywhere."""
    check_shortcut(kind)
    same_shape = stride == 1 and in_planes == out_planes
    if kind == "C" or (kind == "B" and not same_shape):
        return projection(in_planes, out_planes, stride, members)
    if same_shape:
        return nn.Identity()
    return ZeroPadShortcut(in_planes, out_planes, stride, members)


def check_shortcut(kind: str) -> None:
    if kind not in SHORTCUTS:
        raise UserError(
            f"model.shortcut={kind!r} is not a shortcut option of the paper; valid options: A (identity, zero-padded "
            "channels where the size changes), B (1x1 projection only where the size changes), C (projection on "
            "every shortcut)."
        )


def members_of(residual: bool | Sequence[bool]) -> list[bool]:
    """One flag per member: a bool is one net, a list of K flags K nets side by side."""
    return [bool(residual)] if isinstance(residual, bool) else [bool(r) for r in residual]


class Block(nn.Module):
    """What the basic and bottleneck blocks share: the shortcut of the residual members and its addition.
    `residual` is one flag (one net) or one per member: whether member k adds its shortcut; the shortcut modules
    exist if any member does."""

    expansion = 1

    def _init_shortcut(self, kind: str, in_planes: int, out_planes: int, stride: int, residual: list[bool]):
        members = len(residual)
        self.shortcut = make_shortcut(kind, in_planes, out_planes, stride, members) if any(residual) else None
        # a plain member beside residual ones: the addition is masked to the residual members' channels
        mask = None if all(residual) else torch.tensor(residual).repeat_interleave(out_planes)[None, :, None, None]
        self.register_buffer("residual_channels", mask, persistent=False)

    def add_shortcut(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return out
        added = out + self.shortcut(x)
        return added if self.residual_channels is None else torch.where(self.residual_channels, added, out)


class BasicBlock(Block):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut when residual, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, residual: bool | Sequence[bool]):
        super().__init__()
        residual = members_of(residual)
        members = len(residual)
        self.conv1, self.bn1 = conv3x3(in_planes, planes, stride, members), batch_norm(planes, members)
        self.conv2, self.bn2 = conv3x3(planes, planes, 1, members), batch_norm(planes, members)
        self._init_shortcut(shortcut, in_planes, planes, stride, residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.add_shortcut(self.bn2(self.conv2(out)), x))

    def response_layers(self) -> list[nn.BatchNorm2d]:
        """Fig. 7's responses: the BN after each 3x3 conv (before the ReLU or the addition)."""
        return [self.bn1, self.bn2]


class Bottleneck(Block):
    """1x1 (reduce) - 3x3 - 1x1 (expand x4), each conv followed by BN; ReLU after the first two and after the
    addition of the shortcut.

    Where a stage downsamples, the paper strides the first 1x1 conv (`stride_on="1x1"`); torchvision's "v1.5"
    strides the 3x3 (`stride_on="3x3"`): the same parameters, but the 3x3 then runs on 4x more positions."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, residual: bool | Sequence[bool],
                 stride_on: str = "1x1"):
        super().__init__()
        residual = members_of(residual)
        check_stride_on(stride_on)
        stride_1x1, stride_3x3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        members, out_planes = len(residual), planes * self.expansion
        self.conv1, self.bn1 = conv1x1(in_planes, planes, stride_1x1, members), batch_norm(planes, members)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride_3x3, members), batch_norm(planes, members)
        self.conv3, self.bn3 = conv1x1(planes, out_planes, 1, members), batch_norm(out_planes, members)
        self._init_shortcut(shortcut, in_planes, out_planes, stride, residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.add_shortcut(self.bn3(self.conv3(out)), x))

    def response_layers(self) -> list[nn.BatchNorm2d]:
        return [self.bn2]


def check_stride_on(where: str) -> None:
    if where not in STRIDE_ON:
        raise UserError(
            f"model.stride_on={where!r} is not a bottleneck variant; valid: 1x1 (the paper: the first 1x1 conv of a "
            "downsampling block has stride 2) or 3x3 (torchvision's ResNet v1.5: the 3x3 conv has it)."
        )


def stage(block: type[Block], in_planes: int, planes: int, blocks: int, stride: int, shortcut: str,
          residual: bool | Sequence[bool], **block_args) -> nn.Sequential:
    """One stage: `blocks` blocks of width `planes`; the first one takes the stride (and any change of width)."""
    out_planes = planes * block.expansion
    return nn.Sequential(*(block(in_planes if i == 0 else out_planes, planes, stride if i == 0 else 1, shortcut,
                                 residual, **block_args) for i in range(blocks)))


class ResNet(nn.Module):
    """stem -> stages -> global average pool -> FC: every net of the paper. The first stage keeps the stem's
    resolution, each later one halves it at its first block. The pool makes the net fully convolutional.

    `residual` is one flag (one net: input (B, 3, H, W), output (B, classes)) or one flag per member (K nets side by
    side: member k's images in channels 3k..3k+2, output (B, K, classes))."""

    def __init__(self, stem: nn.Module, stem_planes: int, block: type[Block], widths: tuple[int, ...],
                 counts: tuple[int, ...], shortcut: str, residual: bool | Sequence[bool], num_classes: int,
                 checkpoint_activations: bool = False, **block_args):
        super().__init__()
        flags = members_of(residual)
        self.members = len(flags)
        self.checkpoint_activations = checkpoint_activations  # see checkpointed(): less memory, more compute
        self.stem, stages, in_planes = stem, [], stem_planes
        for i, (planes, blocks) in enumerate(zip(widths, counts)):
            stages.append(stage(block, in_planes, planes, blocks, 1 if i == 0 else 2, shortcut, flags, **block_args))
            in_planes = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = GroupedLinear(in_planes, num_classes, self.members)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.checkpoint_activations and torch.is_grad_enabled():
            x = checkpointed(self.blocks(), x)
        else:
            x = self.stages(x)
        return self.fc(torch.flatten(self.pool(x), 1))

    def blocks(self) -> Iterator[Block]:
        return (block for stage in self.stages for block in stage)


def checkpointed(blocks: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Run the blocks in turn, keeping only each block's input for the backward pass, which recomputes the rest:
    the activation memory of one block instead of all, for about a third more compute. The recomputation does not
    update BN's running statistics a second time, so training computes exactly what it computes without this.

    Eager, the recomputation runs the block again, so it updates copies of the statistics (context_fn); compiled
    (torch.compile), the recomputed graph holds no buffer updates, and Dynamo takes no context_fn."""
    compiling = torch.compiler.is_compiling()
    for block in blocks:
        if compiling:
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = checkpoint(block, x, use_reentrant=False, context_fn=functools.partial(_recomputation_contexts, block))
    return x


def _recomputation_contexts(block: nn.Module) -> tuple:
    """The forward runs as it is; the recomputation updates copies of BN's statistics."""
    return nullcontext(), _bn_statistics_frozen(block)


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
