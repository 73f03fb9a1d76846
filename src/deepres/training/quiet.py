"""What Lightning and torch print that concerns no user of this project, silenced in the entry points that train or
evaluate (training/fit.py, evaluate.py)."""
import logging
import warnings


class _Drop(logging.Filter):
    """Lightning's tips, and its note that it saves whole checkpoints (weights_only=False: optimiser and loops too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Tip:" not in message and "`weights_only` was not set" not in message


def quiet_lightning() -> None:
    """Lightning's messages printed once: its "lightning" logger prints them, and its subpackages' loggers, which
    add a console of their own or pass records to the root logger depending on whether the root logger had a
    handler when they were imported (Hydra's, or not yet), only pass them up to it."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    logging.getLogger("lightning").propagate = False
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")  # torch vs Lightning, not ours to fix
    # SLURM runs go through hydra/launcher=slurm, which starts srun itself: Lightning's hint concerns no user of ours
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector"):
        logging.getLogger(name).addFilter(_Drop())
