"""Multiply-adds and parameters of the ImageNet nets beside the paper's FLOPs (Table 1): `make model-table`.

Multiply-adds are counted as the paper counts FLOPs: the convolutions and the FC layer at 224x224, one multiply-add
per weight use (BN, ReLU, pooling and additions are left out). They are counted on the meta device: no memory, no
arithmetic, so even ResNet-152 takes well under a second."""
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deepres.models.imagenet import TABLE_1, ImageNetResNet

PAPER_GFLOPS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
# (depth, residual, shortcut, stride_on): the nets the paper compares (Tables 2-4), and the v1.5 bottleneck variants
VARIANTS = [(18, False, "B", "1x1"), (18, True, "A", "1x1"), (18, True, "B", "1x1"),
            (34, False, "B", "1x1"), (34, True, "A", "1x1"), (34, True, "B", "1x1"), (34, True, "C", "1x1"),
            *((d, True, "B", s) for d in (50, 101, 152) for s in ("1x1", "3x3"))]


def multiply_adds(net: nn.Module, size: int = 224) -> int:
    """Multiply-adds of one forward pass on a size x size image (the net must live on the meta device)."""
    with FlopCounterMode(display=False) as counter:
        net(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-add


def parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def meta_net(depth: int, residual: bool = True, shortcut: str = "B", stride_on: str = "1x1") -> ImageNetResNet:
    with torch.device("meta"):
        return ImageNetResNet(depth, residual, shortcut, stride_on)


def torchvision_parameters(depth: int) -> int:
    with torch.device("meta"):
        return parameters(getattr(torchvision.models, f"resnet{depth}")())


def table() -> str:
    """The model table as Markdown: ours beside the paper's FLOPs and torchvision's parameter counts."""
    lines = ["| net | shortcut | stride on | params | torchvision params | mult-adds @224 (G) | paper (G) | diff |",
             "|---|---|---|---|---|---|---|---|"]
    for depth, residual, shortcut, stride_on in VARIANTS:
        net = meta_net(depth, residual, shortcut, stride_on)
        gmacs = multiply_adds(net) / 1e9
        bottleneck = TABLE_1[depth][0].expansion > 1
        # torchvision = shortcut B, and the v1.5 stride for bottlenecks: the rows whose weights it can load
        loads_torchvision = residual and shortcut == "B" and (stride_on == "3x3" or not bottleneck)
        paper = PAPER_GFLOPS[depth]
        lines.append(
            f"| {'ResNet' if residual else 'plain'}-{depth} | {shortcut if residual else '-'} "
            f"| {stride_on if bottleneck else '-'} | {parameters(net) / 1e6:.2f}M "
            f"| {f'{torchvision_parameters(depth) / 1e6:.2f}M' if loads_torchvision else ''} | {gmacs:.2f} "
            f"| {paper} | {100 * (gmacs / paper - 1):+.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("ImageNet nets: multiply-adds of the conv and FC layers for one 224x224 image (the paper's FLOPs)\n")
    print(table())
