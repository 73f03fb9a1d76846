"""metrics.csv: one row per logged iteration, with a `step` column; the local source of truth for reports.

Rows with the same step (training and test at one iteration) are merged. The whole file is rewritten atomically,
and the rows travel inside each checkpoint, so a resumed run ends with exactly the rows of an uninterrupted one."""
import csv
import io
from collections.abc import Iterable
from pathlib import Path

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from deepres.runs.atomic import atomic_write_text

FILENAME = "metrics.csv"


def read_rows(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv, numbers as floats (step as int), empty cells left out."""
    with open(path, newline="") as f:
        return [{k: (int(float(v)) if k == "step" else float(v)) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)]


def final_metrics(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    """The last value of each result column (status.json's final errors), from rows in step order."""
    last = {}
    for row in rows:
        last.update(row)
    return {k: last[k] for k in ("train/loss", "train/error", "test/loss", "test/error", "val/error") if k in last}


class MetricsCSVLogger(Logger):
    def __init__(self, save_dir: str | Path, flush_on: tuple[str, ...] = ("test/error", "val/error")):
        super().__init__()
        self.path = Path(save_dir) / FILENAME
        self.rows: dict[int, dict[str, float]] = {}
        self.flush_on = flush_on

    @property
    def name(self) -> str:
        return "metrics_csv"

    @property
    def version(self) -> str:
        return ""

    @property
    @rank_zero_experiment
    def experiment(self) -> "MetricsCSVLogger":
        return self

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The composed config is saved by Hydra beside this file (.hydra/config.yaml)."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = int(step if step is not None else max(self.rows, default=0))
        self.rows.setdefault(step, {}).update({k: float(v) for k, v in metrics.items()})
        if any(k in metrics for k in self.flush_on):
            self.save()

    @rank_zero_only
    def save(self) -> None:
        columns = ["step"] + list(dict.fromkeys(k for row in self.rows.values() for k in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({"step": step, **self.rows[step]} for step in sorted(self.rows))
        atomic_write_text(self.path, out.getvalue())

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    def state_dict(self) -> dict:
        return {"rows": {step: dict(row) for step, row in self.rows.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.rows = {int(step): dict(row) for step, row in state["rows"].items()}
        self.save()
