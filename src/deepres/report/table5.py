"""Table 5 as Markdown: the top-5 error of our ensembles beside the paper's. Ours are the ensemble_<mode>.json files
that `src/evaluate.py RUN_DIR RUN_DIR ... eval.ensemble=true eval.mode=MODE` writes into a directory (a sweep's, or
eval.ensemble_dir), one row per test protocol evaluated. The paper's errors are on the ImageNet test set, scored by
the ILSVRC server; ours on the val set, which stands in for it."""
import json
from pathlib import Path

from deepres.errors import UserError
from deepres.report.paper import TABLE_5
from deepres.report.runs import Net
from deepres.report.tables import PROTOCOLS

MODES = {"center": "centre crop", **PROTOCOLS}  # eval.mode -> its name, in the table's order
PAPERS = TABLE_5[-1]  # the paper's own ensemble, which ours is compared with


def ensembles(directory: Path) -> dict[str, dict]:
    """eval.mode -> the ensemble evaluated under it in the directory."""
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory. Give the directory that src/evaluate.py RUN_DIR RUN_DIR ... "
                        "eval.ensemble=true wrote its ensemble_<mode>.json into (eval.ensemble_dir; by default the "
                        "sweep directory holding the runs).")
    found = {mode: json.loads(path.read_text()) for mode in MODES
             if (path := directory / f"ensemble_{mode}.json").is_file()}
    if not found:
        raise UserError(f"{directory} holds no ensemble_<mode>.json (mode: {', '.join(MODES)}). Evaluate the runs as "
                        f"one ensemble first: python src/evaluate.py RUN_DIR RUN_DIR ... eval.ensemble=true "
                        f"eval.mode=multi_scale eval.ensemble_dir={directory}")
    return found


def _member(member: dict) -> str:
    net = Net(bool(member["residual"]), int(member["depth"]), str(member["shortcut"]) if member["residual"] else None)
    return f"{net.label(shortcut=True)} ({Path(member['run']).name}, iteration {member['step']})"


def table5(directory: str | Path) -> str:
    """The paper's rows, then one row per ensemble of the directory."""
    directory = Path(directory)
    ours = ensembles(directory)
    header = ["method", "evaluated on", "top-5 error %", f"ours − {PAPERS.method}", "top-1 error %"]
    lines = ["### Table 5: top-5 error (%) of ensembles", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for row in TABLE_5:
        lines.append(f"| {row.method} | ImageNet test | {row.top5:g} | — | — |")
    notes = []
    for mode, result in ours.items():
        top5, members = result["test/top5_error"], result["members"]
        lines.append(f"| ours: {len(members)} nets, {MODES[mode]} | ImageNet val ({result['images']} images) | "
                     f"{top5:.2f} | {top5 - PAPERS.top5:+.2f} | {result['test/error']:.2f} |")
        notes.append(f"Ours, {MODES[mode]} (src/evaluate.py ... eval.ensemble=true eval.mode={mode}): "
                     f"{'; '.join(_member(m) for m in members)}."
                     + (f" {len(result['skipped'])} unreadable val images skipped." if result["skipped"] else ""))
    notes += ["The paper's errors are on the ImageNet test set (scored by the ILSVRC server); ours on the val set, "
              "which stands in for it.",
              *(f"{row.method}: {row.note}." for row in TABLE_5 if row.note)]
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"
