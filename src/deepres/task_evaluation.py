"""src/evaluate.py on a run of a task other than classification (detection): the checkpoint's net scored as the run's
training scores its test set, by the task's own module (its metric, or its files for a test set without labels,
written under the run as training writes them), with the run's recorded config and the command's overrides; e.g.
`data.test_set=12test` writes a VOC run's detections for the evaluation server. The core stays task-blind: the task
comes from the config (training/task.py)."""
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from deepres.errors import UserError
from deepres.safe_files import read_checkpoint
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.classification import Classification
from deepres.training.task import task_of


def is_classification(cfg: DictConfig) -> bool:
    """Runs recorded before tasks were configurable are classification runs."""
    return "task" not in cfg or isinstance(task_of(cfg), Classification)


class RecordedRows:
    """The rows the module records through its Bookkeeping: evaluating, its one test row."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append(dict(metrics))


def evaluate_with_task(run: Path, cfg: DictConfig, checkpoint: Path) -> dict:
    """The test row of the checkpoint's net (the keys of metrics.csv's), the test set, the checkpoint, its iteration."""
    task = task_of(cfg)
    task.check([cfg])
    datamodule = task.datamodule([cfg])
    recorder = RecordedRows()
    module = task.module([cfg], datamodule, Bookkeeping([None], loggers=[[recorder]]))
    state = read_checkpoint(checkpoint)  # as data: a run directory may come from anywhere
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise UserError(f"{checkpoint} does not fit the net of the run's config with these overrides: "
                        f"{str(err).splitlines()[0]} Evaluate with the run's own model settings.") from None
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision, logger=False,
                        default_root_dir=str(run), enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False)
    trainer.validate(module, datamodule, verbose=False)
    (row,) = recorder.rows
    return {"test_set": cfg.data.test_set, **{k: round(float(v), 4) for k, v in row.items()},
            "checkpoint": str(checkpoint), "step": state["global_step"]}
