"""metrics.csv: one row per logged iteration, with a `step` column; the local source of truth for reports.

Rows with the same step (training and test at one iteration) are merged. The whole file is rewritten atomically,
and the rows travel inside each checkpoint, so a resumed run ends with exactly the rows of an uninterrupted one.
The format only: readers (reports, tests) need neither torch nor Lightning; the run's writer is
runs/metrics_logger.py."""
import csv
import io
from collections.abc import Iterable
from pathlib import Path

FILENAME = "metrics.csv"


def read_rows(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv, numbers as floats (step as int), empty cells left out."""
    with open(path, newline="") as f:
        return [{k: (int(float(v)) if k == "step" else float(v)) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)]


# the columns whose last values status.json and the sweep summary keep: a classifier's errors, a detector's mAPs
RESULTS = ("train/loss", "train/error", "test/loss", "test/error", "val/error", "test/mAP50", "test/mAP")


def final_metrics(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    """The last value of each result column (status.json's final errors), from rows in step order."""
    last = {}
    for row in rows:
        last.update(row)
    return {k: last[k] for k in RESULTS if k in last}


def format_rows(rows: dict[int, dict[str, float]]) -> str:
    """The file's text for {step: row}: a `step` column, then every column in the order it first appeared."""
    columns = ["step"] + list(dict.fromkeys(k for row in rows.values() for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({"step": step, **rows[step]} for step in sorted(rows))
    return out.getvalue()
