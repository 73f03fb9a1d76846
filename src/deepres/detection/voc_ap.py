"""PASCAL VOC detection AP exactly as the VOC 2007 devkit computes it (VOCevaldet.m and its 11-point AP), the
VOC 2010+ all-point AP (VOCap.m) as an option, and VOCMeanAP, the torchmetrics Metric that gathers every process's
detections under DDP and reports the AP of each class and their mean (mAP50).

The devkit's rule, per class: detections of all images in decreasing confidence (ties keep their order); each one's
match is the ground-truth box of its image and class with the highest IoU (the first listed on a tie), taken or not.
With that IoU >= 0.5 (the devkit's `ovmax >= minoverlap`) the detection is a true positive if the box is not
difficult and not yet detected, a false positive (a duplicate) if it was detected, and neither if the box is
difficult; below 0.5, or with no box, it is a false positive. Difficult boxes are not counted in the positives.
Boxes are (x1, y1, x2, y2) in continuous pixel coordinates, in which IoU equals the devkit's with its +1 widths."""
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from deepres.errors import UserError

MIN_OVERLAP = 0.5

# the t of VOCevaldet.m's `for t=0:0.1:1`: MATLAB's colon adds k*0.1 to 0 for the first half of the steps and takes
# k*0.1 from 1 for the rest, so t=0.3 is 3*0.1 (a hair above 0.3) while 0.6 and 0.7 are the doubles nearest 0.6 and
# 0.7 (np.arange's are above them, and miss a recall of exactly 7/10)
RECALL_POINTS_07 = np.array([k * 0.1 for k in range(6)] + [1 - k * 0.1 for k in range(4, -1, -1)])


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """The AP of one class from its recall and precision after each detection in confidence order (fractions).
    VOC 2007: the mean over t in 0, 0.1, ..., 1 of the highest precision at recall >= t (0 where none). VOC 2010+:
    the area under the precision envelope (the highest precision at any greater recall) at each step of recall."""
    if use_07_metric:
        ap = 0.0
        for t in RECALL_POINTS_07:  # summed as the devkit does, to its last bit
            ap += precision[recall >= t].max(initial=0.0) / 11
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * envelope[steps]))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the boxes a[i] and b[i]; 0 where they do not overlap (even when both have no area)."""
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def best_overlaps(det_groups: np.ndarray, det_boxes: np.ndarray, gt_groups: np.ndarray,
                  gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the highest IoU with a ground-truth box of its group (its image and class) and that box's
    index (-inf and -1 where the group has none). On a tie the box listed first wins, as the devkit's `ov > ovmax`."""
    order = np.argsort(gt_groups, kind="stable")
    first = np.searchsorted(gt_groups[order], det_groups, side="left")
    counts = np.searchsorted(gt_groups[order], det_groups, side="right") - first
    # one row per (detection, box of its group): the boxes of each detection's group, in the order they were listed
    pair_det = np.repeat(np.arange(len(det_groups)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_gt = order[np.repeat(first, counts) + within]
    iou = _iou(det_boxes[pair_det], gt_boxes[pair_gt])
    ranked = np.lexsort((pair_gt, -iou, pair_det))  # by detection, then highest IoU, then the box listed first
    best = ranked[np.diff(pair_det[ranked], prepend=-1) != 0]
    overlap, match = np.full(len(det_groups), -np.inf), np.full(len(det_groups), -1)
    overlap[pair_det[best]], match[pair_det[best]] = iou[best], pair_gt[best]
    return overlap, match


def true_false_positives(overlap: np.ndarray, match: np.ndarray,
                         gt_difficult: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's verdicts on detections in confidence order, given each one's best overlap and box: a detection on
    a difficult box is neither, the first on any other box a true positive, the later ones false (duplicates)."""
    hit = overlap >= MIN_OVERLAP
    on_difficult = np.append(gt_difficult, False)[match]  # match -1 (no box) reads the appended False
    counted = np.flatnonzero(hit & ~on_difficult)
    tp = np.zeros(len(overlap), dtype=bool)
    tp[counted[np.unique(match[counted], return_index=True)[1]]] = True
    fp = ~hit
    fp[counted] = ~tp[counted]
    return tp, fp


def voc_average_precisions(num_classes: int, det_images: np.ndarray, det_labels: np.ndarray, det_scores: np.ndarray,
                           det_boxes: np.ndarray, gt_images: np.ndarray, gt_labels: np.ndarray,
                           gt_boxes: np.ndarray, gt_difficult: np.ndarray, use_07_metric: bool = True) -> np.ndarray:
    """The AP (fraction) of each class 1..num_classes over a set of images, from all their detections and ground
    truth as flat arrays (an image is any integer that names it; boxes [N, 4]; difficult bool). Index c-1 holds class
    c: 0 for a class without detections, NaN for one without non-difficult ground truth (it has no AP). One departure
    from the devkit: a class whose every detection fell on a difficult box has AP 0 where the devkit's 0/0
    precisions make NaN.
    """
    groups = num_classes + 1  # an (image, class) pair as one integer: detections meet only boxes of their own
    overlap, match = best_overlaps(det_images.astype(np.int64) * groups + det_labels, det_boxes.astype(np.float64),
                                   gt_images.astype(np.int64) * groups + gt_labels, gt_boxes.astype(np.float64))
    aps = np.full(num_classes, np.nan)
    for c in range(1, num_classes + 1):
        positives = int(np.sum((gt_labels == c) & ~gt_difficult))
        if positives == 0:
            continue
        mine = np.flatnonzero(det_labels == c)
        ranked = mine[np.argsort(-det_scores[mine], kind="stable")]
        tp, fp = true_false_positives(overlap[ranked], match[ranked], gt_difficult)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=tp + fp > 0)
        aps[c - 1] = average_precision(tp / positives, precision, use_07_metric)
    return aps


def _process() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class VOCMeanAP(Metric):
    """PASCAL VOC's AP50 of each class and their mean, in percent, as the VOC 2007 devkit computes them
    (use_07_metric=False: the VOC 2010+ all-point AP). update(preds, targets) takes lists of torchvision's prediction
    dicts and of targets (boxes, labels in 1..K, difficult); compute() returns Python floats: {"mAP50": ...,
    "AP50/<class name>": ...}. A class without non-difficult ground truth has AP NaN and is left out of the mean
    (NaN when every class is). The states are lists concatenated across processes under DDP, so each process's
    images are numbered apart (image k of process r is k * world size + r) and every image meets only its own boxes.
    """
    full_state_update = False
    higher_is_better = True
    is_differentiable = False
    _DTYPES = {"det_images": np.int64, "det_labels": np.int64, "det_scores": np.float64, "det_boxes": np.float64,
               "gt_images": np.int64, "gt_labels": np.int64, "gt_boxes": np.float64, "gt_difficult": bool}

    def __init__(self, class_names: Sequence[str], use_07_metric: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.class_names = list(class_names)
        self.use_07_metric = use_07_metric
        self._images_seen = 0  # never reset: forward() resets the states between batches; image numbers stay unique
        for name in self._DTYPES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _check_labels(self, labels: list[Tensor], whose: str) -> None:
        labels = torch.cat(labels) if labels else torch.zeros(0)
        wrong = (labels < 1) | (labels > len(self.class_names))
        if wrong.any():
            raise UserError(f"{whose} has class label {labels[wrong][0].item()}, outside 1..{len(self.class_names)}, "
                            f"the classes of the VOC metric ({', '.join(self.class_names)}); labels count from 1 (0 "
                            "is background), and the detector's number of classes, the dataset's and the metric's "
                            "must agree.")

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
        self._check_labels([p["labels"] for p in preds], "a prediction")
        self._check_labels([t["labels"] for t in targets], "a target")
        rank, world = _process()
        for pred, target in zip(preds, targets):
            image = self._images_seen * world + rank
            self._images_seen += 1
            # boxes are kept flat: a process without images sends an empty 1-D state, which joins only 1-D states
            self.det_images.append(torch.full_like(pred["labels"], image, dtype=torch.int64))
            self.det_labels.append(pred["labels"].long())
            self.det_scores.append(pred["scores"].float())
            self.det_boxes.append(pred["boxes"].float().reshape(-1))
            self.gt_images.append(torch.full_like(target["labels"], image, dtype=torch.int64))
            self.gt_labels.append(target["labels"].long())
            self.gt_boxes.append(target["boxes"].float().reshape(-1))
            self.gt_difficult.append(target["difficult"].bool())

    def _array(self, name: str) -> np.ndarray:
        state = getattr(self, name)
        flat = dim_zero_cat(state).cpu().numpy() if len(state) else np.zeros(0)
        return flat.astype(self._DTYPES[name]).reshape((-1, 4) if name.endswith("boxes") else -1)

    def compute(self) -> dict[str, float]:
        aps = voc_average_precisions(len(self.class_names), **{name: self._array(name) for name in self._DTYPES},
                                     use_07_metric=self.use_07_metric)
        scored = aps[~np.isnan(aps)]
        result = {"mAP50": 100 * float(scored.mean()) if len(scored) else float("nan")}
        result.update({f"AP50/{name}": 100 * float(ap) for name, ap in zip(self.class_names, aps)})
        return result
