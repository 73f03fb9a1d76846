"""COCO's mAP@[.5:.95] and mAP@.5 (the paper's Table 8) as COCO's own evaluator computes them: pycocotools' COCOeval
with its own thresholds, run by torchmetrics, whose metric gathers every process's detections under DDP."""
import math

from pycocotools.cocoeval import Params
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision


def _percent(stat: Tensor) -> float:
    """COCOeval's -1 (no ground truth at all) becomes NaN."""
    value = float(stat)
    return math.nan if value < 0 else 100 * value


class COCOMeanAP(MeanAveragePrecision):
    """COCO's box AP, averaged over IoU 0.5:0.05:0.95 (mAP) and at IoU 0.5 (mAP50), up to 100 detections an image,
    in percent. update(preds, targets) takes torchvision's prediction dicts and targets in this package's convention
    (boxes (x1, y1, x2, y2), labels 1..K, iscrowd: crowd regions, which neither count as misses nor make detections
    false positives); compute() returns Python floats {"mAP": ..., "mAP50": ...}, NaN without any ground truth."""

    def __init__(self, **kwargs) -> None:
        coco = Params(iouType="bbox")  # COCOeval's float64 thresholds: torchmetrics' own are float32 near-misses
        super().__init__(box_format="xyxy", iou_type="bbox", backend="pycocotools",
                         iou_thresholds=coco.iouThrs.tolist(), rec_thresholds=coco.recThrs.tolist(),
                         max_detection_thresholds=list(coco.maxDets), **kwargs)

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict]) -> None:
        super().update([{"boxes": p["boxes"].float(), "scores": p["scores"].float(), "labels": p["labels"].long()}
                        for p in preds],
                       [{"boxes": t["boxes"].float(), "labels": t["labels"].long(), "iscrowd": t["iscrowd"].long()}
                        for t in targets])

    def compute(self) -> dict[str, float]:
        stats = super().compute()
        return {"mAP": _percent(stats["map"]), "mAP50": _percent(stats["map_50"])}
