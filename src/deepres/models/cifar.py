"""The 6n+2 CIFAR nets of section 4.2: a 3x3 stem, three stages of n blocks on {32,16,8} maps, pool, FC."""
from collections.abc import Sequence

from torch import nn

from deepres.errors import UserError
from deepres.models.blocks import BasicBlock, ResNet, batch_norm, conv3x3, members_of

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


def cifar_stem(members: int = 1) -> nn.Sequential:
    """3x3 conv, 16 -> BN -> ReLU on the 32x32 image."""
    return nn.Sequential(conv3x3(3, STAGE_WIDTHS[0], 1, members), batch_norm(STAGE_WIDTHS[0], members),
                         nn.ReLU(inplace=True))


class CifarResNet(ResNet):
    """ResNet (residual=True) or its plain twin (residual=False) with 6n+2 weighted layers; with one flag per member
    (residual=[True, False, ...]), that many such nets side by side (blocks.py)."""

    config = "cifar_resnet"  # conf/model/cifar_resnet.yaml
    data_sets = ("cifar10", "cifar100")  # the 32x32 images this net is built for
    check_depth = staticmethod(depth_to_n)

    def __init__(self, depth: int = 20, residual: bool | Sequence[bool] = True, shortcut: str = "A",
                 num_classes: int = 10, checkpoint_activations: bool = False):
        n = depth_to_n(depth)
        super().__init__(cifar_stem(len(members_of(residual))), STAGE_WIDTHS[0], BasicBlock, STAGE_WIDTHS,
                         (n,) * len(STAGE_WIDTHS), shortcut, residual, num_classes, checkpoint_activations)

    def response_layers(self) -> list[nn.BatchNorm2d]:
        """Fig. 7's responses, in network order: the BN after each 3x3 conv (the stem's, then each block's)."""
        return [self.stem[1], *(bn for block in self.blocks() for bn in block.response_layers())]
