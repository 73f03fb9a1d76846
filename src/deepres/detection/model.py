"""A detector from its model config (conf/model/faster_rcnn.yaml): the ImageNet net it starts from (weights.py), split
as Appendix A splits it (backbones.py), in torchvision's Faster R-CNN (faster_rcnn.py)."""
from collections.abc import Sequence

from deepres.detection.backbones import FROZEN_STAGES, resnet_backbone, vgg16_backbone
from deepres.detection.faster_rcnn import Detector, build_detector
from deepres.detection.weights import INPUT_STD, imagenet_resnet, imagenet_vgg16
from deepres.errors import UserError

BACKBONES = ("resnet", "vgg16")


def faster_rcnn(num_classes: int, backbone: str = "resnet", depth: int = 101, residual: bool = True,
                shortcut: str = "B", stride_on: str = "1x1", weights: str | None = None,
                weights_format: str = "deepres", image_std: Sequence[float] | None = None,
                frozen_stages: int = FROZEN_STAGES, **detector) -> Detector:
    """Faster R-CNN for `num_classes` object classes on a ResNet (or its plain twin) of `depth`, or on VGG-16;
    `detector` holds build_detector's settings. Images are divided by `image_std`, by default the std that the
    weights' format was trained with."""
    if backbone not in BACKBONES:
        raise UserError(f"model.backbone={backbone!r} is not a detection backbone; valid: resnet (the ImageNet net "
                        "of model.depth, model.residual, model.shortcut: ResNet-101 in Tables 7 and 8), vgg16 "
                        "(Faster R-CNN's own baseline).")
    if backbone == "vgg16":
        parts = vgg16_backbone(imagenet_vgg16(weights, weights_format), frozen_stages)
    else:
        parts = resnet_backbone(imagenet_resnet(depth, residual, shortcut, stride_on, weights, weights_format),
                                frozen_stages)
    std = image_std if image_std is not None else INPUT_STD.get(weights_format, INPUT_STD["deepres"])
    return build_detector(parts, num_classes, image_std=std, **detector)
