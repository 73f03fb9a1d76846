"""The 6n+2 CIFAR nets of section 4.2: a 3x3 stem, three stages of n blocks on {32,16,8} maps, pool, FC."""
from torch import nn

from deepres.errors import UserError
from deepres.models.blocks import BasicBlock, ResNet, conv3x3

STAGE_WIDTHS = (16, 32, 64)
PAPER_DEPTHS = (20, 32, 44, 56, 110, 1202)


def depth_to_n(depth: int) -> int:
    """Blocks per stage for a 6n+2-layer net; any other depth is a user error."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise UserError(
            f"model.depth={depth!r} is not a CIFAR depth: it must be 6n+2 for some n >= 1 "
            f"(the paper's: {', '.join(map(str, PAPER_DEPTHS))}; also 8, 14, 26, 38, ...)."
        )
    return (depth - 2) // 6


class CifarResNet(ResNet):
    """ResNet (residual=True) or its plain twin (residual=False) with 6n+2 weighted layers."""

    def __init__(self, depth: int = 20, residual: bool = True, shortcut: str = "A", num_classes: int = 10,
                 checkpoint_activations: bool = False):
        n = depth_to_n(depth)
        stem = nn.Sequential(conv3x3(3, STAGE_WIDTHS[0]), nn.BatchNorm2d(STAGE_WIDTHS[0]), nn.ReLU(inplace=True))
        super().__init__(stem, STAGE_WIDTHS[0], BasicBlock, STAGE_WIDTHS, (n,) * len(STAGE_WIDTHS), shortcut,
                         residual, num_classes, checkpoint_activations)
