"""A run's train.log holds its messages (the project's, Lightning's, Python warnings) and why it stopped."""
import logging
import warnings

import pytest
from helpers.train import FAST, run_train

from deepres.runs.run_log import run_logs
from deepres.training.quiet import quiet_lightning


def test_every_kind_of_message_and_the_reason_reach_each_runs_log(tmp_path):
    quiet_lightning()  # as the entry points do: Lightning's messages reach its own logger
    runs = [tmp_path / "a", tmp_path / "b"]  # a pack of two: each its own file
    for run in runs:
        run.mkdir()
    with pytest.raises(RuntimeError), run_logs(runs):
        logging.getLogger("deepres").info("the project's message")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("Lightning's message")
        warnings.warn("a Python warning", UserWarning, stacklevel=1)
        raise RuntimeError("the reason it stopped")
    for run in runs:
        log = (run / "train.log").read_text()
        for line in ("[deepres][INFO] - the project's message", "Lightning's message",
                     "[py.warnings][WARNING]", "a Python warning",
                     "[deepres][ERROR] - stopped: RuntimeError: the reason it stopped"):
            assert line in log
    logging.getLogger("deepres").info("after the run")
    assert "after the run" not in (runs[0] / "train.log").read_text()


def test_a_run_logs_its_training(tmp_path, cifar10_root):
    run_train(*FAST, "trainer.max_steps=5", f"data.root={cifar10_root}", f"hydra.run.dir={tmp_path / 'ok'}")
    log = (tmp_path / "ok" / "train.log").read_text()
    assert "resnet-8: training to iteration 5 from the start" in log and "`Trainer.fit` stopped" in log
