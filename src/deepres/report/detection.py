"""Tables 7 and 8 as Markdown: the mAP of our Faster R-CNN runs beside the paper's, one row per backbone (the paper's
VGG-16 and ResNet-101, then any other the sweep ran, such as plain-101). Ours is each completed run's final iterate
(its last evaluation, as the paper reports), never its best; a net run with several seeds reads "best (mean ± std)",
the best being the highest mAP. VOC 2012 test has no public labels: a run tested on it writes its detections for
the PASCAL evaluation server (comp4 files), and Table 7 names their folder where a score would be."""
from collections.abc import Callable, Iterable
from pathlib import Path
from statistics import mean, stdev

from deepres.detection.voc_submission import comp4_results_path
from deepres.errors import UserError
from deepres.report.paper import TABLE_7, TABLE_8
from deepres.report.runs import Net, Run, Sweep

Groups = dict[Net, list[Run]]
OURS = ("Ours: the final iterate of each completed run (its last evaluation), never the best one; with several "
        "seeds, best (mean ± std) over them; ours − paper compares means.")


def _stat(values: list[float]) -> str:
    return f"{max(values):.1f} ({mean(values):.1f}±{stdev(values):.1f})" if len(values) > 1 else f"{values[0]:.1f}"


def _on(sweep: Sweep, data: str, what: str) -> Sweep:
    """The sweep's runs on the data set named `data`; a UserError naming what it holds when there are none."""
    part = sweep.only(lambda run: run.config.data.name == data)
    if not part.runs:
        found = ", ".join(sorted({f"{run.net.label()} on {run.config.data.name}" for run in sweep.runs}))
        raise UserError(f"{sweep.path} holds no runs of {what}; it holds {found}.")
    return part


def _groups(sweep: Sweep, keep: Callable[[Run], bool], what: str) -> Groups:
    """The runs `keep` accepts by net, of one setting (Sweep.select); {} when there are none."""
    part = sweep.only(keep)
    return part.select(lambda net: True, what) if part.runs else {}


def _nets(paper: Iterable[Net], *parts: Groups) -> list[Net]:
    """The paper's nets, then the others that the sweep ran, in order."""
    paper = list(paper)
    return paper + sorted({net for groups in parts for net in groups} - set(paper))


def _completed(groups: Groups, net: Net) -> list[Run]:
    return [run for run in groups.get(net, []) if run.status == "completed"]


def _absent(groups: Groups, net: Net) -> str:
    return "not completed" if net in groups else "not run"


def _count_cells(groups: Groups, net: Net) -> list[str]:
    """Iterations (the longest completed run's) and seeds."""
    runs = _completed(groups, net)
    return [str(max(run.steps for run in runs)), str(len(runs))] if runs else ["—", "0"]


def _finals(groups: Groups, net: Net, key: str) -> list[float]:
    values = [run.final(key) for run in _completed(groups, net)]
    return [value for value in values if value is not None]


def _score_cells(groups: Groups, net: Net, key: str, paper: float | None) -> list[str]:
    """Ours, the paper's, ours − paper."""
    ours = _finals(groups, net, key)
    return [_stat(ours) if ours else _absent(groups, net), f"{paper:.1f}" if paper is not None else "—",
            f"{mean(ours) - paper:+.1f}" if ours and paper is not None else "—"]


def _comp4_folder(run: Run) -> Path | None:
    """Where the run wrote its comp4_det_test_<class>.txt files for the evaluation server (voc_submission.py), if
    it did."""
    files = sorted(run.path.glob(f"*/{comp4_results_path('', '*')}"))
    return files[0].parent if files else None


def _server_cell(groups: Groups, net: Net) -> str:
    runs = _completed(groups, net)
    if not runs:
        return _absent(groups, net)
    return "server: " + "; ".join(str(_comp4_folder(run) or f"no comp4 files in {run.path}") for run in runs)


def _setting(name: str, groups: Groups) -> list[str]:
    """The setting that the runs of one column share (Sweep.select checked it), as a note."""
    if not groups:
        return []
    first = next(iter(groups.values()))[0]
    overrides = " ".join(first.setting) or "none"
    return [f"{name}: trainer.max_steps={first.config.trainer.max_steps}, data.batch_size="
            f"{first.config.data.batch_size}; overrides besides the nets and seeds: {overrides}."]


def _unfinished(*parts: Groups) -> list[str]:
    runs = [f"{run.path.name} ({run.status}, step {run.steps})"
            for groups in parts for runs in groups.values() for run in runs if run.status != "completed"]
    return [f"Not counted, not completed: {'; '.join(runs)}."] if runs else []


def _markdown(title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows] + [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def table7(sweep: Sweep) -> str:
    """Faster R-CNN on PASCAL VOC: each backbone's mAP on VOC 2007 test (runs with data.test_set=07test, the paper's
    trained on 07+12), and the comp4 folder of its runs on VOC 2012 test (data.test_set=12test, trained on 07++12)."""
    voc = _on(sweep, "voc", "Table 7 (Faster R-CNN on PASCAL VOC: experiment=voc_faster_rcnn)")
    voc07 = _groups(voc, lambda run: run.config.data.test_set == "07test", "VOC 2007 test")
    voc12 = _groups(voc, lambda run: run.config.data.test_set == "12test", "VOC 2012 test")
    paper = {row.net: row for row in TABLE_7}
    header = ["net", "iterations (07+12)", "seeds (07+12)", "VOC 07 test mAP % (ours)", "paper", "ours − paper",
              "iterations (07++12)", "seeds (07++12)", "VOC 12 test mAP % (ours)", "paper"]
    rows = []
    for net in _nets(paper, voc07, voc12):
        row = paper.get(net)
        rows.append([net.label(), *_count_cells(voc07, net),
                     *_score_cells(voc07, net, "test/mAP50", row.voc07 if row else None),
                     *_count_cells(voc12, net), _server_cell(voc12, net), f"{row.voc12:.1f}" if row else "—"])
    notes = [*_setting(f"VOC 07 test runs ({sweep.path})", voc07), *_setting(f"VOC 12 test runs ({sweep.path})", voc12),
             OURS,
             "VOC 12 test: its labels are not public, so the PASCAL VOC evaluation server scores it; a run tested on "
             "it writes one results/VOC2012/Main/comp4_det_test_<class>.txt per class: upload a tar archive of that "
             "results/ folder.",
             "The paper's: mAP (%) of Faster R-CNN with the net as its backbone, fine-tuned from its ImageNet model; "
             "VOC 07 test trained on 07+12 (VOC 2007 and 2012 trainval), VOC 12 test on 07++12 (those and VOC 2007 "
             "test: data.train_sets=07++12 data.test_set=12test).",
             *_unfinished(voc07, voc12)]
    return _markdown("Table 7: object detection mAP (%) on PASCAL VOC", header, rows, notes)


def _gain(groups: Groups) -> str:
    """ResNet-101's mAP@[.5, .95] relative to VGG-16's: the paper's "28% relative improvement"."""
    vgg, resnet = TABLE_8  # the paper's two rows, in its order
    paper = f"{resnet.map / vgg.map:.2f} ({resnet.map:.1f} / {vgg.map:.1f}), its \"28% relative improvement\""
    base, better = (_finals(groups, row.net, "test/mAP") for row in (vgg, resnet))
    if not (base and better):
        ours = "needs completed VGG-16 and ResNet-101 runs"
    elif mean(base) <= 0:
        ours = f"undefined (VGG-16's is {mean(base):.1f})"
    else:
        ratio = mean(better) / mean(base)
        ours = f"{ratio:.2f} ({mean(better):.1f} / {mean(base):.1f}, {100 * (ratio - 1):+.0f}%)"
    return f"Relative gain of ResNet-101 over VGG-16 in mAP@[.5, .95]: ours {ours}; the paper's {paper}."


def table8(sweep: Sweep) -> str:
    """Faster R-CNN on MS COCO: each backbone's mAP@.5 and mAP@[.5, .95] on the test set (the paper's: val), and
    ResNet-101's relative gain over VGG-16."""
    coco = _on(sweep, "coco", "Table 8 (Faster R-CNN on MS COCO: experiment=coco_faster_rcnn)")
    groups = coco.select(lambda net: True, "Table 8")
    paper = {row.net: row for row in TABLE_8}
    header = ["net", "iterations", "seeds", "mAP@.5 % (ours)", "paper", "ours − paper", "mAP@[.5, .95] % (ours)",
              "paper", "ours − paper"]
    rows = []
    for net in _nets(paper, groups):
        row = paper.get(net)
        rows.append([net.label(), *_count_cells(groups, net),
                     *_score_cells(groups, net, "test/mAP50", row.map50 if row else None),
                     *_score_cells(groups, net, "test/mAP", row.map if row else None)])
    tested = ", ".join(sorted({str(run.config.data.test_set) for runs in groups.values() for run in runs}))
    notes = [_gain(groups), *_setting(f"Runs ({sweep.path})", groups), OURS,
             "The paper's: Faster R-CNN with the net as its backbone, trained on COCO train (80k images) and scored "
             f"on val (40k images) with COCO's evaluator; ours: scored so on {tested}.",
             *_unfinished(groups)]
    return _markdown("Table 8: object detection mAP (%) on MS COCO val", header, rows, notes)
