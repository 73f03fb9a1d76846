"""Lightning's W&B logger with W&B's history step (_step) set to the iteration.

Lightning's logger lets W&B count its log calls, from 0 in every process: a killed and resumed run left two
offline folders (one run id) whose histories both started at _step 0, and a server that keeps one row per step
showed a broken curve. With the iteration as the step, the folders of a run resumed any number of times sync into
one history equal to metrics.csv. A resumed run logs its earlier rows again first (training/module.py): a killed
process's last rows may never have reached W&B; steps the W&B run already has are skipped here (online) or
dropped by the server as seen (offline folders synced later)."""
from collections.abc import Mapping

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only


class IterationWandbLogger(WandbLogger):
    def __init__(self, **kwargs):
        import wandb

        # W&B's copy of the console (output.log) duplicates train.log, and its hooks on stdout and stderr, left
        # after the run finished, turned a full disk's messages into a cascade of errors
        kwargs.setdefault("settings", wandb.Settings(console="off"))
        super().__init__(**kwargs)
        # Lightning passes anonymous=None, which W&B warns about on every run ("has no effect")
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            super().log_metrics(metrics)
            return
        if step < self.experiment.step:  # a step the W&B run already has (it resumed on the server)
            return
        # rows of one iteration (training, evaluation) merge into W&B's row of that step
        self.experiment.log({**metrics, "trainer/global_step": step}, step=step)
