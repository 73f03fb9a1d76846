"""The ImageNet nets a detector starts from (Appendix A: the detectors are initialised from the ImageNet
classification models), with their weights (model.weights=PATH, model.weights_format=FORMAT):

  deepres      ResNets: an ImageNet classification run's checkpoints/final.ckpt, or a bare state dict of the same net
  torchvision  ResNets: torchvision's ResNet-18..152 state dicts (stride_on="3x3" for 50+ layers: its v1.5);
               VGG-16: torchvision's vgg16 state dict (features.N.*, classifier.0/3/6.*), whose fc8 (classifier.6)
               is dropped

Every file is read as data (weights_only, deepres.safe_files): public weights hold no code. The nets expect their
images normalised as in their training: INPUT_STD gives the divisor of each format (the mean is ImageNet's)."""
from pathlib import Path

from torch import nn
from torchvision.models import VGG, vgg16

from deepres.errors import UserError
from deepres.models.blocks import Bottleneck
from deepres.models.imagenet import ImageNetResNet, table_1_row
from deepres.models.public_weights import load_weights, read_state_dict

RESNET_FORMATS = ("deepres", "torchvision")
# deepres's ImageNet data subtracts the mean only (the paper); torchvision's nets were trained on (x - mean) / std
INPUT_STD = {"deepres": (1.0, 1.0, 1.0), "torchvision": (0.229, 0.224, 0.225)}


def imagenet_resnet(depth: int = 101, residual: bool = True, shortcut: str = "B", stride_on: str = "1x1",
                    weights: str | Path | None = None, weights_format: str = "deepres",
                    num_classes: int = 1000) -> ImageNetResNet:
    """ImageNetResNet with the weights of `weights` (random without). `num_classes` is the classification run's (its FC
    layer must load; the detector drops it)."""
    net = ImageNetResNet(depth, residual, shortcut, stride_on, num_classes)
    if weights is None:
        return net
    if weights_format not in RESNET_FORMATS:
        raise UserError(f"model.weights_format={weights_format!r} is not a format of ImageNet ResNet weights for a "
                        f"detector; valid: {', '.join(RESNET_FORMATS)}.")
    if weights_format == "torchvision" and stride_on == "1x1" and table_1_row(depth)[0] is Bottleneck:
        raise UserError(f"model.weights={weights} (model.weights_format=torchvision) needs model.stride_on=3x3: "
                        f"torchvision's ResNet-{depth} strides the 3x3 conv of a downsampling block (its v1.5), and "
                        "with model.stride_on=1x1 its tensors would load into a different function.")
    return load_weights(net, weights, weights_format)


def imagenet_vgg16(weights: str | Path | None = None, weights_format: str = "torchvision") -> VGG:
    """torchvision's VGG-16 without fc8 (classifier.6 is the identity), with the weights of `weights` (random
    without)."""
    if weights is not None and weights_format != "torchvision":
        raise UserError(f"model.weights_format={weights_format!r} is not a format of VGG-16 weights; valid: "
                        "torchvision (its vgg16 state dict).")
    state = None if weights is None else read_state_dict(Path(weights).expanduser())
    net = vgg16(weights=None)
    net.classifier[6] = nn.Identity()
    if state is None:
        return net
    misfit = _load(net, {key: value for key, value in state.items() if not key.startswith("classifier.6.")})
    if misfit:
        raise UserError(f"model.weights={weights} (model.weights_format=torchvision) does not fit torchvision's VGG-16 "
                        f"(13 conv layers as features.0-28, fc6 and fc7 as classifier.0 and classifier.3): {misfit}.")
    return net


def _load(net: nn.Module, state: dict) -> str:
    """Load `state` into `net`; what did not fit (the first tensor of another shape, else the keys missing and
    unexpected), or "" when every tensor found its place."""
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape: torch names it on the message's second line
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        return (lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__).rstrip(".")
    return "; ".join(f"{what}: {', '.join(keys[:3])}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
                     for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
