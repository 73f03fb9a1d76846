"""Faster R-CNN [32] on a Backbone (backbones.py), as section 4.3 and Appendix A use it: torchvision's FasterRCNN
(RPN, anchors, box coder, sampling, losses, NMS) wired to the trunk, max RoI pooling of the stride-16 map, the head
and two sibling layers (K+1 classes, per-class boxes).

The defaults are [32]'s, and where it is silent the authors' released py-faster-rcnn code's: shorter side 600 (longer
at most 1000); anchors of 128, 256, 512 pixels x ratios 0.5, 1, 2; 256 anchors per image, up to half positive
(IoU > 0.7, or a box's best anchor), negatives IoU < 0.3; proposal NMS at 0.7, keeping the 12000 best-scored anchors
before it and 2000 proposals after it in training, 6000 and 300 at test; 128 RoIs per image, 25% foreground
(IoU >= 0.5); box deltas scaled by (10, 10, 5, 5) (the released code's target stds 0.1, 0.1, 0.2, 0.2);
detections: score >= 0.05, per-class NMS at 0.3, at most 100 per image.

Known differences from [32] that torchvision's parts impose:
  - anchors crossing the image border are not ignored in the RPN's training;
  - background RoIs are those of IoU < 0.5 (the released code: IoU in [0.1, 0.5));
  - RPN and detector are trained jointly ("approximate joint training", which the released code also offers),
    not in [32]'s 4 alternating steps;
  - proposals smaller than 16 pixels (in the resized image) are kept, not removed;
  - anchors are centred on multiples of 16 pixels (the released code: on 7.5 + multiples of 16);
  - the RPN scores each anchor with one sigmoid logit (the released code: a 2-way softmax).
In training, difficult (VOC) boxes are left out of the targets, as the released code leaves them out (no anchor or
RoI is matched to them, and RoIs on them may be sampled as background), and crowd (COCO) boxes likewise."""
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign, roi_align, roi_pool

from deepres.detection.backbones import STRIDE, Backbone
from deepres.errors import UserError

POOLINGS = ("max", "align")
IMAGENET_MEAN = (0.485, 0.456, 0.406)


class RoIPooler(MultiScaleRoIAlign):
    """RoI pooling of the one stride-16 map to output_size x output_size: max pooling (Fast R-CNN's RoIPool, the
    paper's) or RoIAlign (bilinear samples, sampling_ratio^2 per bin). A MultiScaleRoIAlign only because torchvision's
    FasterRCNN accepts no other type; the scale is fixed at 1/16, not inferred."""

    def __init__(self, output_size: int, pooling: str = "max", sampling_ratio: int = 2):
        if pooling not in POOLINGS:
            raise UserError(f"model.pooling={pooling!r} is not an RoI pooling; valid: max (RoIPool, the paper's), "
                            "align (RoIAlign).")
        super().__init__(["0"], output_size, sampling_ratio)
        self.pooling = pooling

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        if self.pooling == "max":  # RoIPool reads Caffe's boxes, whose x2, y2 are the last pixels inside
            return roi_pool(x["0"], [box - box.new_tensor([0, 0, 1, 1]) for box in boxes], self.output_size, 1 / STRIDE)
        # aligned: box coordinates are continuous (pixel i spans [i, i + 1)), so its centre is at i + 0.5
        return roi_align(x["0"], boxes, self.output_size, 1 / STRIDE, self.sampling_ratio, aligned=True)


def sibling_layers(in_features: int, num_classes: int) -> FastRCNNPredictor:
    """The classifier (K+1 scores) and per-class box regressor on the head's vectors, initialised as in [32]'s code:
    Gaussian weights of std 0.01 and 0.001, zero biases."""
    predictor = FastRCNNPredictor(in_features, num_classes + 1)
    for layer, std in ((predictor.cls_score, 0.01), (predictor.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)
    return predictor


def training_targets(targets: Sequence[dict]) -> list[dict[str, torch.Tensor]]:
    """The boxes and labels a detector learns from: those not marked difficult or iscrowd."""
    kept = []
    for target in targets:
        ignored = torch.zeros(len(target["boxes"]), dtype=torch.bool, device=target["boxes"].device)
        for flag in ("difficult", "iscrowd"):
            if flag in target:
                ignored |= target[flag].to(ignored.device, torch.bool)
        kept.append({"boxes": target["boxes"][~ignored], "labels": target["labels"][~ignored]})
    return kept


class Detector(FasterRCNN):
    """torchvision's FasterRCNN taking the project's images and targets: uint8 images are scaled to [0, 1], and in
    training only training_targets(targets) are seen. Training returns the loss dict (loss_objectness,
    loss_rpn_box_reg, loss_classifier, loss_box_reg); evaluation the predictions, in the images' own coordinates.
    Under autocast (bf16-mixed on CUDA) only the trunk and the head run in low precision; boxes stay float32."""

    def forward(self, images: list[torch.Tensor], targets: Sequence[dict] | None = None):
        images = [image if image.is_floating_point() else image.float().div(255) for image in images]
        if self.training and targets is not None:
            targets = training_targets(targets)
        device = images[0].device.type
        precision = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        for part in (self.backbone, self.roi_heads.box_head):
            part.precision = precision
        with torch.autocast(device, enabled=False):
            return super().forward(images, targets)


def build_detector(backbone: Backbone, num_classes: int, *, pooling: str = "max", min_size: int | Sequence[int] = 600,
                   max_size: int = 1000, image_mean: Sequence[float] = IMAGENET_MEAN,
                   image_std: Sequence[float] = (1.0, 1.0, 1.0), anchor_sizes: Sequence[int] = (128, 256, 512),
                   aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), rpn_batch_size_per_image: int = 256,
                   rpn_positive_fraction: float = 0.5, rpn_fg_iou_thresh: float = 0.7, rpn_bg_iou_thresh: float = 0.3,
                   rpn_nms_thresh: float = 0.7, rpn_pre_nms_top_n_train: int = 12000,
                   rpn_post_nms_top_n_train: int = 2000, rpn_pre_nms_top_n_test: int = 6000,
                   rpn_post_nms_top_n_test: int = 300, box_batch_size_per_image: int = 128,
                   box_positive_fraction: float = 0.25, box_fg_iou_thresh: float = 0.5, box_bg_iou_thresh: float = 0.5,
                   box_score_thresh: float = 0.05, box_nms_thresh: float = 0.3,
                   box_detections_per_img: int = 100) -> Detector:
    """Faster R-CNN for `num_classes` object classes (K; labels 1..K, 0 is background) on `backbone`.

    Images are normalised as (x - image_mean) / image_std with x in [0, 1]: std 1 for this project's ImageNet nets,
    which subtract the mean only (the paper), torchvision's std for its weights (weights.INPUT_STD). `min_size` may
    list several shorter sides, one drawn per training image. The other arguments are torchvision's FasterRCNN's
    (named as there, defaults in the module docstring)."""
    anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),))
    min_size = tuple(min_size) if isinstance(min_size, Sequence) else min_size  # torchvision takes no ListConfig
    return Detector(
        backbone.trunk, min_size=min_size, max_size=max_size, image_mean=list(image_mean), image_std=list(image_std),
        rpn_anchor_generator=anchors, rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test, rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test, rpn_nms_thresh=rpn_nms_thresh,
        rpn_fg_iou_thresh=rpn_fg_iou_thresh, rpn_bg_iou_thresh=rpn_bg_iou_thresh,
        rpn_batch_size_per_image=rpn_batch_size_per_image, rpn_positive_fraction=rpn_positive_fraction,
        box_roi_pool=RoIPooler(backbone.roi_size, pooling), box_head=backbone.head,
        box_predictor=sibling_layers(backbone.head.out_channels, num_classes), box_score_thresh=box_score_thresh,
        box_nms_thresh=box_nms_thresh, box_detections_per_img=box_detections_per_img,
        box_fg_iou_thresh=box_fg_iou_thresh, box_bg_iou_thresh=box_bg_iou_thresh,
        box_batch_size_per_image=box_batch_size_per_image, box_positive_fraction=box_positive_fraction,
    )
