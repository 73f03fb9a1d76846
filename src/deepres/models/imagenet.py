"""The ImageNet nets of Table 1: a 7x7 stem, stages conv2_x..conv5_x on 56/28/14/7 maps, average pool, FC.

The blocks and shortcuts are the CIFAR nets' (blocks.py); only the stem and the depth table differ."""
from collections.abc import Sequence

from torch import nn

from deepres.errors import UserError
from deepres.models.blocks import BasicBlock, Bottleneck, ResNet, batch_norm, check_stride_on, conv, members_of

STAGE_WIDTHS = (64, 128, 256, 512)
# Table 1: depth -> (block, blocks per stage)
TABLE_1 = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def table_1_row(depth: int) -> tuple[type[nn.Module], tuple[int, ...]]:
    """The block type and blocks per stage of an ImageNet depth; any other depth is a user error."""
    if isinstance(depth, bool) or depth not in TABLE_1:
        raise UserError(
            f"model.depth={depth!r} is not an ImageNet depth of Table 1; valid: {', '.join(map(str, TABLE_1))} "
            "(18 and 34 with basic blocks, 50, 101 and 152 with bottleneck blocks)."
        )
    return TABLE_1[depth]


def imagenet_stem(members: int = 1) -> nn.Sequential:
    """7x7 conv, 64, stride 2 -> BN -> ReLU -> 3x3 max pool, stride 2: 224x224 in, 56x56 out."""
    return nn.Sequential(conv(3, 64, 7, 2, members), batch_norm(64, members), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, stride=2, padding=1))


class ImageNetResNet(ResNet):
    """ResNet-18/34/50/101/152 (residual=True) or its plain twin (residual=False).

    `shortcut` is the option where the size changes (A, B, C; the paper uses B for 50+, A in Table 2);
    `stride_on` places a bottleneck's stride on its first 1x1 conv (the paper) or on its 3x3 (torchvision v1.5)."""

    config = "imagenet_resnet"  # conf/model/imagenet_resnet.yaml
    data_sets = ("imagenet",)  # the 224x224 images this net is built for
    check_depth = staticmethod(table_1_row)

    def __init__(self, depth: int = 18, residual: bool | Sequence[bool] = True, shortcut: str = "B",
                 stride_on: str = "1x1", num_classes: int = 1000):
        block, counts = table_1_row(depth)
        check_stride_on(stride_on)
        block_args = {"stride_on": stride_on} if block is Bottleneck else {}
        super().__init__(imagenet_stem(len(members_of(residual))), 64, block, STAGE_WIDTHS, counts, shortcut,
                         residual, num_classes, **block_args)
