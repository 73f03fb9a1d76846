"""VOC 2012 test has no public labels: it is scored by the PASCAL evaluation server, which takes one results file per
class in the devkit's format. The files go to comp4 (detection with any training data), since the paper's 07++12
training set reaches beyond VOC 2012's own data."""
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from deepres.errors import UserError
from deepres.runs.atomic import atomic_write_text


def comp4_results_path(out: str | Path, class_name: str) -> Path:
    return Path(out) / "results" / "VOC2012" / "Main" / f"comp4_det_test_{class_name}.txt"


def write_comp4_results(out: str | Path, class_names: Sequence[str], image_ids: Sequence[str],
                        preds: Sequence[dict[str, Tensor]]) -> list[Path]:
    """Write <out>/results/VOC2012/Main/comp4_det_test_<class>.txt for every class (empty when it has no
    detections): one line per detection, `<image id> <score> <xmin> <ymin> <xmax> <ymax>`, back in the devkit's
    1-based pixel coordinates (x1 + 1, y1 + 1, x2, y2), in the order of the images and of their detections. Each file
    is replaced whole, so a crash never leaves one half written. Returns the files, in class order; the server takes
    them as an archive of the results folder."""
    if len(image_ids) != len(preds):
        raise ValueError(f"{len(image_ids)} image ids for {len(preds)} predictions")
    lines: list[list[str]] = [[] for _ in class_names]
    for image_id, pred in zip(image_ids, preds):
        for label, score, (x1, y1, x2, y2) in zip(pred["labels"].tolist(), pred["scores"].tolist(),
                                                  pred["boxes"].tolist()):
            if not 1 <= label <= len(class_names):
                raise UserError(f"a detection in image {image_id} has class label {label}, outside "
                                f"1..{len(class_names)}, the VOC classes given ({', '.join(class_names)}); the "
                                "detector's number of classes must match them (labels count from 1, 0 is background).")
            lines[label - 1].append(f"{image_id} {score:.6f} {x1 + 1:.1f} {y1 + 1:.1f} {x2:.1f} {y2:.1f}\n")
    paths = [comp4_results_path(out, name) for name in class_names]
    for path, class_lines in zip(paths, lines):
        atomic_write_text(path, "".join(class_lines))
    return paths
