"""A second, independent reading of the PASCAL VOC devkit's detection AP, to cross-check deepres.detection.voc_ap:
VOCevaldet.m (with VOC 2007's inline 11-point AP) and VOCap.m (VOC 2010+), transcribed loop by loop in the devkit's
own conventions. Ground truth is per-image records of objects with 1-based inclusive pixel boxes (a box's width is
x2 - x1 + 1); detections are the lines of a results file, (image id, confidence, x1, y1, x2, y2). MATLAB's arithmetic
is kept where it matters: 0/0 is NaN, max() skips NaN, and 0:0.1:1 is built as MATLAB's colon builds it."""
import math

MINOVERLAP = 0.5  # VOCopts.minoverlap


def matlab_colon(a: float, d: float, b: float) -> list[float]:
    """a:d:b for a whole number n of steps: the first half counts up from a, the second half down from b, and for
    an even n the middle is (a+b)/2 (MATLAB's symmetric colon)."""
    n = round((b - a) / d)
    v = [0.0] * (n + 1)
    for k in range(n // 2 + 1):
        v[k] = a + k * d
        v[n - k] = b - k * d
    if n % 2 == 0:
        v[n // 2] = (a + b) / 2
    return v


def matlab_max(values: list[float]) -> float | None:
    """max() of a vector: None for an empty one, NaN only when every element is NaN."""
    if not values:
        return None
    numbers = [x for x in values if not math.isnan(x)]
    return max(numbers) if numbers else math.nan


def ap_11_point(rec: list[float], prec: list[float]) -> float:
    ap = 0.0
    for t in matlab_colon(0, 0.1, 1):
        p = matlab_max([prec[i] for i in range(len(rec)) if rec[i] >= t])
        if p is None:
            p = 0.0
        ap = ap + p / 11
    return ap


def vocap(rec: list[float], prec: list[float]) -> float:
    mrec = [0.0] + rec + [1.0]
    mpre = [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = matlab_max([mpre[i], mpre[i + 1]])
    ap = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap


def evaldet(cls: str, recs: dict[str, list[dict]], results: list[tuple], use_07_metric: bool = True) -> float:
    """The AP of class `cls`. recs: image id -> its objects, each {"class", "bbox": [x1, y1, x2, y2] 1-based,
    "difficult"}; results: the lines of the class's results file. NaN where the class has no non-difficult object
    (the devkit divides by zero there)."""
    gt = {}
    npos = 0
    for image_id, objects in recs.items():
        mine = [o for o in objects if o["class"] == cls]
        gt[image_id] = {"BB": [o["bbox"] for o in mine], "diff": [bool(o["difficult"]) for o in mine],
                        "det": [False] * len(mine)}
        npos = npos + sum(1 for o in mine if not o["difficult"])
    if npos == 0:
        return math.nan

    order = sorted(range(len(results)), key=lambda d: -results[d][1])  # sort(-confidence): stable on ties
    tp = [0] * len(order)
    fp = [0] * len(order)
    for d, line in enumerate(results[i] for i in order):
        g = gt[line[0]]
        bb = line[2:]
        ovmax = -math.inf
        jmax = None
        for j, bbgt in enumerate(g["BB"]):
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw = bi[2] - bi[0] + 1
            ih = bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1)
                      - iw * ih)
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax = ov
                    jmax = j
        if ovmax >= MINOVERLAP:
            if not g["diff"][jmax]:
                if not g["det"][jmax]:
                    tp[d] = 1
                    g["det"][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1

    rec, prec = [], []
    ctp = cfp = 0
    for d in range(len(order)):
        ctp += tp[d]
        cfp += fp[d]
        rec.append(ctp / npos)
        prec.append(ctp / (ctp + cfp) if ctp + cfp else math.nan)
    return ap_11_point(rec, prec) if use_07_metric else vocap(rec, prec)
