"""The split of an ImageNet net into Faster R-CNN's parts (Appendix A, "Networks on Conv feature maps"): the trunk,
the layers of total stride 16 computed once on the whole image and shared by the RPN and the detector, and the head,
the layers run on each RoI-pooled region.

  ResNet   trunk: conv1, conv2_x, conv3_x, conv4_x    head: conv5_x (its stride 2 kept), global average pooling
  VGG-16   trunk: its 13 conv layers (conv1_x..conv5_x), without the last max pool    head: fc6, fc7 (ReLU, dropout)

The RoI pooling between them gives 14x14 regions to ResNet's conv5_1 and 7x7 to VGG-16's fc6. Every BN layer becomes
torchvision's FrozenBatchNorm2d with the trained statistics: the paper fixes BN during fine-tuning (VGG-16 has none).
The first `frozen_stages` stages of the trunk are not fine-tuned either; neither paper says which, and the default
(2) is what the authors' released code freezes: conv1_x and conv2_x of VGG-16 (py-faster-rcnn), conv1 and conv2_x of
a ResNet (their later R-FCN and Detectron code)."""
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import VGG
from torchvision.ops.misc import FrozenBatchNorm2d

from deepres.errors import UserError
from deepres.models.imagenet import ImageNetResNet

RESNET_TRUNK = ("conv1", "conv2_x", "conv3_x", "conv4_x")
VGG16_TRUNK = ("conv1_x", "conv2_x", "conv3_x", "conv4_x", "conv5_x")
# where each stage of VGG-16's `features` ends (after its max pool; conv5_x stops before the last one)
_VGG16_STAGE_ENDS = (5, 10, 17, 24, 30)
FROZEN_STAGES = 2
STRIDE = 16


class NetPart(nn.Sequential):
    """A trunk or a head: its layers run in `precision` (None: as called; the detector sets its step's autocast
    dtype, bf16 on CUDA), its output in float32, the precision in which torchvision's detector computes anchors, box
    deltas, sampling and NMS (in bf16, a box edge between 512 and 1024 pixels lands on every 4th pixel)."""

    precision: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision is None:
            return super().forward(x)
        with torch.autocast(x.device.type, dtype=self.precision):
            return super().forward(x).float()


@dataclass
class Backbone:
    """A detector's net: `trunk` (image -> stride-16 map of trunk.out_channels channels), `head` (pooled regions of
    roi_size x roi_size -> vectors of head.out_channels)."""

    trunk: NetPart
    head: NetPart
    roi_size: int


def frozen_batch_norm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm2d replaced, in place, by a FrozenBatchNorm2d of the same statistics, scale and
    offset: a constant affine map in training and evaluation alike."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for field in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, field).copy_(getattr(child, field).detach())
            setattr(module, name, frozen.to(child.weight.device))
        else:
            frozen_batch_norm(child)
    return module


def freeze_stages(trunk: nn.Sequential, frozen_stages: int) -> nn.Sequential:
    """No gradient for the first `frozen_stages` stages (named children) of the trunk."""
    names = list(trunk._modules)
    if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not 0 <= frozen_stages <= len(names):
        raise UserError(
            f"model.frozen_stages={frozen_stages!r} is not a number of the trunk's stages; valid: 0 to {len(names)} "
            f"(the first that many of {', '.join(names)} are not fine-tuned; the released Faster R-CNN code: "
            f"{FROZEN_STAGES})."
        )
    for stage in list(trunk.children())[:frozen_stages]:
        stage.requires_grad_(False)
    return trunk


def _named(modules: dict[str, nn.Module], out_channels: int) -> NetPart:
    part = NetPart(OrderedDict(modules))
    part.out_channels = out_channels  # what torchvision's FasterRCNN and our predictor read
    return part


def resnet_backbone(net: ImageNetResNet, frozen_stages: int = FROZEN_STAGES) -> Backbone:
    """The trunk and head of an ImageNetResNet of any depth, plain or residual, shortcut and stride_on (its FC layer
    is dropped). The net's modules are reused, so load its weights first."""
    conv5_x = net.stages[3]
    expansion = type(conv5_x[0]).expansion
    trunk = _named(dict(zip(RESNET_TRUNK, (net.stem, *net.stages[:3]))), 256 * expansion)
    head = _named({"conv5_x": conv5_x, "pool": nn.AdaptiveAvgPool2d(1), "flatten": nn.Flatten()}, 512 * expansion)
    return Backbone(freeze_stages(frozen_batch_norm(trunk), frozen_stages), frozen_batch_norm(head), roi_size=14)


def vgg16_backbone(net: VGG, frozen_stages: int = FROZEN_STAGES) -> Backbone:
    """The trunk and head of torchvision's VGG-16 (`torchvision.models.vgg16()`'s structure; fc8 is dropped). Its
    adaptive 7x7 average pool is the identity on 7x7 regions, so the head starts at fc6."""
    starts = (0, *_VGG16_STAGE_ENDS[:-1])
    trunk = _named({name: net.features[start:end] for name, start, end in zip(VGG16_TRUNK, starts, _VGG16_STAGE_ENDS)},
                   512)
    fc6, relu6, drop6, fc7, relu7, drop7 = list(net.classifier)[:6]
    head = _named({"flatten": nn.Flatten(), "fc6": fc6, "relu6": relu6, "drop6": drop6, "fc7": fc7, "relu7": relu7,
                   "drop7": drop7}, fc7.out_features)
    return Backbone(freeze_stages(trunk, frozen_stages), head, roi_size=7)
