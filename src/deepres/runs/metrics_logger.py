"""The run's metrics.csv writer, a Lightning logger (the file's format: runs/metrics_csv.py). It holds every row,
rewrites the file whenever a test or validation error arrives, and hands its rows to each checkpoint."""
from pathlib import Path

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from deepres.runs.atomic import atomic_write_text
from deepres.runs.metrics_csv import FILENAME, format_rows


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
        atomic_write_text(self.path, format_rows(self.rows))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    def state_dict(self) -> dict:
        return {"rows": {step: dict(row) for step, row in self.rows.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.rows = {int(step): dict(row) for step, row in state["rows"].items()}
        self.save()
