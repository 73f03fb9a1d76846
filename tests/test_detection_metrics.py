"""The detection metrics: the VOC 2007 devkit's AP (hand-worked cases, and random cases against a loop-by-loop
reading of the devkit), its gathering across processes, COCO's mAP against pycocotools' COCOeval run here, and the
VOC 2012 evaluation server's results files."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers.voc_devkit import evaldet
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from deepres.detection.coco_map import COCOMeanAP
from deepres.detection.voc_ap import VOCMeanAP, average_precision
from deepres.detection.voc_submission import write_comp4_results
from deepres.errors import UserError

CLASSES = ("cat", "dog", "bird")
CAT, DOG, BIRD = 1, 2, 3


def image(dets=(), gts=(), image_id="0"):
    """One image's prediction and target: dets as (label, score, box), gts as (label, box[, difficult[, iscrowd]])."""
    gts = [(*g, False, False)[:4] for g in gts]
    pred = {"boxes": torch.tensor([d[2] for d in dets], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([d[1] for d in dets], dtype=torch.float32),
            "labels": torch.tensor([d[0] for d in dets], dtype=torch.int64)}
    target = {"boxes": torch.tensor([g[1] for g in gts], dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor([g[0] for g in gts], dtype=torch.int64),
              "difficult": torch.tensor([g[2] for g in gts], dtype=torch.bool),
              "iscrowd": torch.tensor([g[3] for g in gts], dtype=torch.bool), "image_id": image_id}
    return pred, target


def voc(*images, use_07_metric=True) -> dict[str, float]:
    metric = VOCMeanAP(CLASSES, use_07_metric=use_07_metric)
    metric.update([p for p, _ in images], [t for _, t in images])
    return metric.compute()


BOX_A, BOX_B, FAR = [0, 0, 10, 10], [20, 20, 40, 40], [100, 100, 120, 120]


# ---- hand-worked VOC cases (AP in percent; the 11 recall points are t = 0, 0.1, ..., 1) ----

def test_a_perfect_detector_scores_100():
    # every detection a TP: precision 1 at every recall up to 1 -> AP 100; dog and bird have no ground truth
    result = voc(image([(CAT, 0.9, BOX_A)], [(CAT, BOX_A)]), image([(CAT, 0.8, BOX_B)], [(CAT, BOX_B)], "1"))
    assert result["AP50/cat"] == pytest.approx(100)
    assert result["mAP50"] == pytest.approx(100)
    assert math.isnan(result["AP50/dog"]) and math.isnan(result["AP50/bird"])


def test_a_duplicate_detection_is_a_false_positive():
    # order TP (A), FP (A again), TP (B); 2 positives: recall .5 .5 1, precision 1 .5 2/3.
    # 11-point: t = 0..0.5 (6 points) -> 1; t = 0.6..1 (5 points) -> 2/3: (6 + 10/3) / 11 = 84.8485
    # all-point: envelope 1 up to recall .5, 2/3 up to 1: .5 * 1 + .5 * 2/3 = 83.3333
    images = (image([(CAT, 0.9, BOX_A), (CAT, 0.8, BOX_A)], [(CAT, BOX_A)]),
              image([(CAT, 0.7, BOX_B)], [(CAT, BOX_B)], "1"))
    assert voc(*images)["AP50/cat"] == pytest.approx(100 * (6 + 10 / 3) / 11)
    assert voc(*images, use_07_metric=False)["AP50/cat"] == pytest.approx(100 * 5 / 6)


def test_a_detection_on_a_difficult_box_is_neither_true_nor_false():
    # the first detection (on the difficult box) is ignored, the second is a TP of the 1 positive -> AP 100;
    # were it a FP the AP would be 50, were the difficult box a positive it would be 6/11
    result = voc(image([(CAT, 0.9, BOX_B), (CAT, 0.8, BOX_A)], [(CAT, BOX_A), (CAT, BOX_B, True)]))
    assert result["AP50/cat"] == pytest.approx(100)


def test_a_class_without_detections_scores_0_and_one_without_ground_truth_is_left_out():
    # cat perfect (100), dog has a box but no detection (0), bird has a detection but no box (no AP):
    # mAP = (100 + 0) / 2 = 50
    result = voc(image([(CAT, 0.9, BOX_A), (BIRD, 0.5, BOX_B)], [(CAT, BOX_A), (DOG, BOX_B)]))
    assert (result["AP50/cat"], result["AP50/dog"]) == (pytest.approx(100), 0)
    assert math.isnan(result["AP50/bird"])
    assert result["mAP50"] == pytest.approx(50)


def test_iou_of_exactly_one_half_is_a_true_positive_as_in_the_devkit():
    # box 10x5 inside 10x10: IoU 50/100 = 0.5 exactly (also with the devkit's +1 widths: [1,1,10,5] in [1,1,10,10]);
    # the devkit's test is ovmax >= 0.5 -> TP, AP 100. A hair less overlap is a FP -> AP 0
    assert voc(image([(CAT, 0.9, [0, 0, 10, 5])], [(CAT, BOX_A)]))["AP50/cat"] == pytest.approx(100)
    assert voc(image([(CAT, 0.9, [0, 0, 10, 4.99])], [(CAT, BOX_A)]))["AP50/cat"] == 0


def test_a_lower_scored_true_positive_after_a_false_positive():
    # FP then TP: recall 0 1, precision 0 .5: at every t the best precision is .5 -> AP 50 (all-point also 50)
    images = (image([(CAT, 0.9, FAR), (CAT, 0.8, BOX_A)], [(CAT, BOX_A)]),)
    assert voc(*images)["AP50/cat"] == pytest.approx(50)
    assert voc(*images, use_07_metric=False)["AP50/cat"] == pytest.approx(50)


def test_the_best_overlap_is_chosen_among_taken_boxes_too():
    # two objects annotated with the same box, two detections on it: both best match the first box listed (the devkit
    # matches before it looks at what was taken), so TP then FP: recall .5 .5, precision 1 .5 -> 6/11 = 54.5455
    result = voc(image([(CAT, 0.9, BOX_A), (CAT, 0.8, BOX_A)], [(CAT, BOX_A), (CAT, BOX_A)]))
    assert result["AP50/cat"] == pytest.approx(100 * 6 / 11)


def test_an_iou_tie_goes_to_the_box_listed_first():
    # a difficult box listed before a normal one on the same place, and another normal box: the first detection's
    # match is the difficult box (ignored), the second is a TP of 2 positives: recall 0 .5, precision - 1:
    # t = 0..0.5 -> 1 (6 points) -> 6/11 = 54.5455 (matched to the normal box it would be 100)
    result = voc(image([(CAT, 0.9, BOX_A), (CAT, 0.8, BOX_B)], [(CAT, BOX_A, True), (CAT, BOX_A), (CAT, BOX_B)]))
    assert result["AP50/cat"] == pytest.approx(100 * 6 / 11)


@pytest.mark.parametrize("found, expected", [(7, 8 / 11), (3, 3 / 11)])
def test_recall_points_are_those_of_matlab_colon(found, expected):
    # 10 positives, `found` of them detected without a FP: precision 1 up to recall found/10, then nothing.
    # MATLAB's 0:0.1:1 has t = 0.7 exactly (7/10 reaches it: t = 0..0.7, 8 points) but t = 3*0.1 > 0.3 (3/10
    # misses it: t = 0, 0.1, 0.2, 3 points); np.arange's 0.7000000000000001 would give 7/11
    recall = np.arange(1, found + 1) / 10
    assert average_precision(recall, np.ones(found)) == pytest.approx(expected, abs=1e-12)


def test_every_detection_on_a_difficult_box_scores_0():
    # no TP and no FP: the devkit's precisions are 0/0 and its AP NaN; here AP 0 (the class's positive was missed)
    assert voc(image([(CAT, 0.9, BOX_B)], [(CAT, BOX_A), (CAT, BOX_B, True)]))["AP50/cat"] == 0


def test_a_label_outside_the_classes_is_a_user_error():
    with pytest.raises(UserError, match=r"class label 4, outside 1\.\.3.*cat, dog, bird"):
        voc(image([(4, 0.9, BOX_A)], [(CAT, BOX_A)]))
    with pytest.raises(UserError, match=r"a target has class label 0"):
        voc(image([], [(0, BOX_A)]))


# ---- random cases against the devkit, in the devkit's own coordinates ----

def random_images(rng: np.random.Generator) -> list[tuple[dict, dict]]:
    """A few images of half-pixel boxes (IoU ties at 0.5 happen), some empty, with difficult and repeated boxes,
    near-miss and duplicate detections, stray ones, wrong classes, and scores on a 0.1 grid (ties)."""
    images = []
    for i in range(int(rng.integers(1, 7))):
        gts = []
        for _ in range(int(rng.integers(0, 5))):
            x1, y1 = rng.integers(0, 80, 2) / 2
            w, h = rng.integers(1, 40, 2) / 2
            gts.append((int(rng.integers(1, 4)), [x1, y1, x1 + w, y1 + h], bool(rng.random() < 0.25)))
            if rng.random() < 0.15:  # the same box again (IoU ties), difficult or not
                gts.append((gts[-1][0], gts[-1][1], bool(rng.random() < 0.5)))
        dets = []
        for label, box, _ in gts:
            for _ in range(int(rng.integers(0, 3))):
                lo = np.array(box[:2]) + rng.integers(-6, 7, 2) / 2
                hi = np.maximum(np.array(box[2:]) + rng.integers(-6, 7, 2) / 2, lo + 0.5)
                wrong = rng.random() < 0.1
                dets.append((int(rng.integers(1, 4)) if wrong else label, float(rng.integers(0, 10)) / 10,
                             [*lo, *hi]))
        for _ in range(int(rng.integers(0, 3))):
            x1, y1 = rng.integers(0, 80, 2) / 2
            dets.append((int(rng.integers(1, 4)), float(rng.integers(0, 10)) / 10, [x1, y1, x1 + 5, y1 + 5]))
        images.append(image(dets, gts, str(i)))
    return images


def to_devkit(images) -> tuple[dict[str, list[dict]], dict[str, list[tuple]]]:
    """Annotation records and results-file lines, 1-based: (x1 + 1, y1 + 1, x2, y2)."""
    def one_based(box):
        x1, y1, x2, y2 = box.tolist()
        return [x1 + 1, y1 + 1, x2, y2]

    recs, results = {}, {name: [] for name in CLASSES}
    for pred, target in images:
        recs[target["image_id"]] = [{"class": CLASSES[label - 1], "bbox": one_based(box), "difficult": difficult}
                                    for label, box, difficult in zip(target["labels"].tolist(), target["boxes"],
                                                                     target["difficult"].tolist())]
        for label, score, box in zip(pred["labels"].tolist(), pred["scores"].tolist(), pred["boxes"]):
            results[CLASSES[label - 1]].append((target["image_id"], score, *one_based(box)))
    return recs, results


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_random_cases_match_the_devkit(use_07_metric):
    rng = np.random.default_rng(2007)
    seen = {"no ground truth": 0, "no detections": 0, "scored": 0}
    for _ in range(300):
        images = random_images(rng)
        result = voc(*images, use_07_metric=use_07_metric)
        recs, results = to_devkit(images)
        for name in CLASSES:
            devkit = evaldet(name, recs, results[name], use_07_metric)
            positives = any(o["class"] == name and not o["difficult"] for objects in recs.values() for o in objects)
            if math.isnan(devkit) and positives:  # the one departure: every detection on a difficult box
                devkit = 0.0
            seen["no ground truth"] += not positives
            seen["no detections"] += positives and not results[name]
            seen["scored"] += 0 < devkit < 1
            assert result[f"AP50/{name}"] == pytest.approx(100 * devkit, abs=1e-6, nan_ok=True), (name, recs, results)
    assert min(seen.values()) >= 3, seen


# ---- gathering across processes ----

def _voc_on_a_slice(rank: int, world: int, init: str, images, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        metric = VOCMeanAP(CLASSES)
        mine = images[rank * len(images) // world:(rank + 1) * len(images) // world]
        metric.update([p for p, _ in mine], [t for _, t in mine])
        result = metric.compute()
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_gather_every_detection(tmp_path):
    # process 1 has process 0's images again, numbered apart so that each meets only its own boxes (as one image,
    # every second detection would be a duplicate), and one more, with a bird found, that process 0 does not see
    rng = np.random.default_rng(5)
    half = [im for _ in range(3) for im in random_images(rng)] + [image([], [(DOG, BOX_A)], "no detections")]
    images = [*half, *half, image([(BIRD, 1.0, BOX_B)], [(BIRD, BOX_B)], "bird")]
    mp.spawn(_voc_on_a_slice, args=(2, f"file://{tmp_path / 'init'}", images, str(tmp_path / "out.json")), nprocs=2)
    gathered = json.loads((tmp_path / "out.json").read_text())
    assert gathered == pytest.approx(voc(*images), nan_ok=True)
    assert gathered["AP50/bird"] != pytest.approx(voc(*half)["AP50/bird"])


# ---- COCO ----

def coco_map(*images) -> dict[str, float]:
    metric = COCOMeanAP()
    metric.update([p for p, _ in images], [t for _, t in images])
    return metric.compute()


def test_coco_perfect_detections_score_100():
    result = coco_map(image([(CAT, 0.9, BOX_A), (DOG, 0.8, BOX_B)], [(CAT, BOX_A), (DOG, BOX_B)]))
    assert result == pytest.approx({"mAP": 100, "mAP50": 100})


def test_coco_hand_case():
    # boxes A, B; detections: A exactly (.9), a stray one (.8), one on B at IoU 62/100 = 0.62 (.7).
    # IoU thresholds .5, .55, .6: TP FP TP, recall .5 .5 1, precision 1 .5 2/3; interpolated precision 1 at the
    #   101 recall points 0..0.5 (51 of them), 2/3 at the 50 above: AP = (51 + 50 * 2/3) / 101
    # thresholds .65 .. .95 (7): TP FP FP: 1 at the 51 points up to .5, 0 above: AP = 51 / 101
    # mAP50 = 100 (51 + 100/3) / 101 = 83.4983; mAP = 100 (3 (51 + 100/3) + 7 * 51) / 1010 = 100 * 610 / 1010
    result = coco_map(image([(CAT, 0.9, BOX_A), (CAT, 0.8, FAR), (CAT, 0.7, [20, 20, 40, 32.4])],
                            [(CAT, BOX_A), (CAT, BOX_B)]))
    assert result["mAP50"] == pytest.approx(100 * (51 + 100 / 3) / 101, abs=1e-4)
    assert result["mAP"] == pytest.approx(100 * 610 / 1010, abs=1e-4)


def test_coco_crowd_regions_are_passed_through():
    # a detection inside a crowd region is ignored: the rest is perfect -> 100. Without the flag it is a FP (IoU 0.16
    # with B) ahead of the TP on A, and B is missed: precision .5 at recall .5 -> 51 * .5 / 101 at every threshold
    dets = [(CAT, 0.9, BOX_A), (CAT, 0.95, [22, 22, 30, 30])]
    assert coco_map(image(dets, [(CAT, BOX_A), (CAT, BOX_B, False, True)]))["mAP"] == pytest.approx(100)
    assert coco_map(image(dets, [(CAT, BOX_A), (CAT, BOX_B)]))["mAP"] == pytest.approx(100 * 25.5 / 101, abs=1e-4)


def cocoeval_directly(images) -> tuple[float, float]:
    """pycocotools' COCOeval on the same case, its boxes as COCO's [x, y, width, height]."""
    def xywh(box):
        x1, y1, x2, y2 = box.tolist()
        return [x1, y1, x2 - x1, y2 - y1]

    annotations, detections = [], []
    for i, (pred, target) in enumerate(images):
        for label, box, crowd in zip(target["labels"].tolist(), target["boxes"], target["iscrowd"].tolist()):
            bbox = xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": label, "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": int(crowd)})
        detections += [{"image_id": i, "category_id": label, "bbox": xywh(box), "score": score}
                       for label, score, box in zip(pred["labels"].tolist(), pred["scores"].tolist(), pred["boxes"])]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": [{"id": i} for i in range(len(images))], "annotations": annotations,
                         "categories": [{"id": c} for c in range(1, len(CLASSES) + 1)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[0], evaluation.stats[1]


def test_coco_map_agrees_with_cocoeval():
    rng = np.random.default_rng(8)
    images = [im for _ in range(4) for im in random_images(rng)]
    images = [(pred, {**target, "iscrowd": target["difficult"]}) for pred, target in images]  # some crowd regions
    result = coco_map(*images)
    expected_map, expected_map50 = cocoeval_directly(images)
    assert 0.01 < expected_map < expected_map50 < 0.99
    assert result["mAP"] / 100 == pytest.approx(expected_map, abs=1e-6)
    assert result["mAP50"] / 100 == pytest.approx(expected_map50, abs=1e-6)


# ---- VOC 2012 server files ----

def test_comp4_results_files(tmp_path):
    preds = [image([(DOG, 0.87654321, [10.3, 20, 110.5, 220]), (CAT, 0.5, [0, 0, 9, 9])])[0],
             image([(DOG, 0.1234564, [0, 1.04, 2.96, 3])])[0]]
    paths = write_comp4_results(tmp_path, CLASSES, ["2008_000001", "2008_000002"], preds)
    main = tmp_path / "results" / "VOC2012" / "Main"
    assert paths == [main / f"comp4_det_test_{name}.txt" for name in CLASSES]
    assert sorted(p.name for p in main.iterdir()) == sorted(p.name for p in paths)  # no temporary files left
    assert paths[0].read_text() == "2008_000001 0.500000 1.0 1.0 9.0 9.0\n"
    assert paths[1].read_text() == ("2008_000001 0.876543 11.3 21.0 110.5 220.0\n"
                                    "2008_000002 0.123456 1.0 2.0 3.0 3.0\n")
    assert paths[2].read_text() == ""


def test_comp4_results_refuse_a_label_outside_the_classes(tmp_path):
    with pytest.raises(UserError, match=r"image 2008_000001 has class label 0, outside 1\.\.3"):
        write_comp4_results(tmp_path, CLASSES, ["2008_000001"], [image([(0, 0.5, BOX_A)])[0]])
    assert not (tmp_path / "results").exists()
