"""A run's train.log: every message of its training (the project's, Lightning's, Python warnings) and why it stopped.

Each run of a pack gets its own file with the pack's messages. Hydra's own file handler is not attached
(conf/hydra/default.yaml): it got none of Lightning's messages, and a pack's landed in one member's directory."""
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from deepres.runs.signals import Interrupted

FILENAME = "train.log"
FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
# Lightning's messages stop at its own logger, which prints them (training/quiet.py)
OWN_HANDLERS = ("lightning",)



@contextlib.contextmanager
def run_logs(run_dirs: list[Path]) -> Iterator[None]:
    """While the block runs, append what is logged (and warned) to each directory's train.log; an exception
    leaving the block is written there too, as the reason the run stopped."""
    handlers = [logging.FileHandler(Path(d) / FILENAME, encoding="utf-8") for d in run_dirs]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
    loggers = [logging.getLogger(), *map(logging.getLogger, OWN_HANDLERS)]
    root_level = loggers[0].level
    loggers[0].setLevel(min(root_level or logging.INFO, logging.INFO))
    for logger in loggers:
        for handler in handlers:
            logger.addHandler(handler)
    logging.captureWarnings(True)
    # a full disk: the run reports it once (runs/lifecycle.py), not a traceback for every message a log file
    # (train.log, W&B's debug.log) could not take
    raises, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        yield
    except BaseException as err:
        level = logging.WARNING if isinstance(err, Interrupted | KeyboardInterrupt) else logging.ERROR
        record = logging.LogRecord("deepres", level, __file__, 0, f"stopped: {type(err).__name__}: {err}", None, None)
        for handler in handlers:
            handler.handle(record)
        raise
    finally:
        logging.raiseExceptions = raises
        logging.captureWarnings(False)
        loggers[0].setLevel(root_level)
        for logger in loggers:
            for handler in handlers:
                logger.removeHandler(handler)
        for handler in handlers:
            handler.close()
