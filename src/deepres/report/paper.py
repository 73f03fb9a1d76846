"""The paper's numbers that the tables compare with (He et al. 2016, Tables 2-8)."""
from dataclasses import dataclass

from deepres.report.runs import VGG_16, Net


@dataclass(frozen=True)
class PaperRow:
    net: Net
    error: float                 # top-1 test error (%), the number our mean is compared with
    top5: float | None = None    # top-5 error (%), ImageNet
    params: str = ""             # as the paper prints it
    note: str = ""
    printed: str = ""            # the error as the paper prints it, when that is more than `error`


# Table 6: CIFAR-10 test error, single view. ResNet-110's row is "best (mean ± std)" of 5 runs; we compare means.
TABLE_6 = [
    PaperRow(Net(True, 20, "A"), 8.75, params="0.27M"),
    PaperRow(Net(True, 32, "A"), 7.51, params="0.46M"),
    PaperRow(Net(True, 44, "A"), 7.17, params="0.66M"),
    PaperRow(Net(True, 56, "A"), 6.97, params="0.85M"),
    PaperRow(Net(True, 110, "A"), 6.61, params="1.7M", printed="6.43 (6.61±0.16)",
             note="the paper's best (mean ± std) of 5 runs"),
    PaperRow(Net(True, 1202, "A"), 7.93, params="19.4M"),
]

# Table 2: ImageNet val top-1 error, 10-crop; the ResNets use shortcut A.
TABLE_2 = [
    PaperRow(Net(False, 18), 27.94),
    PaperRow(Net(False, 34), 28.54),
    PaperRow(Net(True, 18, "A"), 27.88),
    PaperRow(Net(True, 34, "A"), 25.03),
]

# Table 3: ImageNet val top-1 / top-5 error, 10-crop; ResNet-50/101/152 use shortcut B.
TABLE_3 = [
    PaperRow(Net(False, 34), 28.54, 10.02),
    PaperRow(Net(True, 34, "A"), 25.03, 7.76),
    PaperRow(Net(True, 34, "B"), 24.52, 7.46),
    PaperRow(Net(True, 34, "C"), 24.19, 7.40),
    PaperRow(Net(True, 50, "B"), 22.85, 6.71),
    PaperRow(Net(True, 101, "B"), 21.75, 6.05),
    PaperRow(Net(True, 152, "B"), 21.43, 5.71),
]

# Table 4: ImageNet val top-1 / top-5 error of single models, multi-scale (fully convolutional at shorter sides
# {224, 256, 384, 480, 640}, and mirrored); ResNet-50/101/152 use shortcut B.
TABLE_4 = [
    PaperRow(Net(True, 34, "B"), 21.84, 5.71),
    PaperRow(Net(True, 34, "C"), 21.53, 5.60),
    PaperRow(Net(True, 50, "B"), 20.74, 5.25),
    PaperRow(Net(True, 101, "B"), 19.87, 4.60),
    PaperRow(Net(True, 152, "B"), 19.38, 4.49),
]


@dataclass(frozen=True)
class EnsembleRow:
    method: str                  # as Table 5 names it
    top5: float                  # top-5 error (%) on the ImageNet test set (the ILSVRC server's)
    note: str = ""


# Table 5: top-5 error of ensembles on the ImageNet test set.
TABLE_5 = [
    EnsembleRow("VGG (ILSVRC'14)", 7.32),
    EnsembleRow("GoogLeNet (ILSVRC'14)", 6.66),
    EnsembleRow("VGG (v5)", 6.8),
    EnsembleRow("PReLU-net", 4.94),
    EnsembleRow("BN-inception", 4.82),
    EnsembleRow("ResNet (ILSVRC'15)", 3.57,
                note="six models of different depths (only two of them 152-layer ones at the time of submitting)"),
]


@dataclass(frozen=True)
class VocRow:
    net: Net                     # the backbone of the baseline Faster R-CNN [32]
    voc07: float                 # mAP (%) on VOC 2007 test, trained on 07+12
    voc12: float                 # mAP (%) on VOC 2012 test (the evaluation server's), trained on 07++12


# Table 7: Faster R-CNN on PASCAL VOC; ResNet-101 is the ImageNet net of Table 3 (shortcut B).
TABLE_7 = [
    VocRow(VGG_16, 73.2, 70.4),
    VocRow(Net(True, 101, "B"), 76.4, 73.8),
]


@dataclass(frozen=True)
class CocoRow:
    net: Net
    map50: float                 # COCO val mAP@.5 (%)
    map: float                   # COCO val mAP@[.5, .95] (%), COCO's standard metric


# Table 8: Faster R-CNN on MS COCO val. The paper's "28% relative improvement" is ResNet-101's mAP@[.5, .95] over
# VGG-16's: 27.2 / 21.2 = 1.28.
TABLE_8 = [
    CocoRow(VGG_16, 41.5, 21.2),
    CocoRow(Net(True, 101, "B"), 48.4, 27.2),
]
