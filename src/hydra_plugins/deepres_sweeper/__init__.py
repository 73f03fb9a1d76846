"""Hydra's basic sweeper, validating every job's config before launching any (a Hydra plugin, so it lives in the
hydra_plugins namespace; selected in conf/hydra/default.yaml)."""
import logging

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from deepres.errors import UserError
from hydra_plugins.deepres_launchers.launchers import JobDied

log = logging.getLogger(__name__)


class ValidatingSweeper(BasicSweeper):
    """Hydra's basic sweeper, but every job's config is composed and validated before any job is launched, so a
    bad point in a grid costs seconds, not the hours of the jobs launched before it. A job that died without a
    result does not end the sweep in a traceback: its run is marked failed (deepres.runs.summary), and the sweep
    ends with its summary (exit status 1)."""

    def sweep(self, arguments):
        try:
            return super().sweep(arguments)
        except JobDied as died:  # every job of the batch has ended; its summary tells them apart
            log.error(f"a job died: {died}")
            return None

    def validate_batch_is_legal(self, batch) -> None:
        from deepres.training.task import task_of  # here: plugin discovery must not load torch

        for overrides in batch:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            try:
                task_of(cfg).check([cfg])  # the checks of its task: the config, then the data's files
            except UserError as err:
                raise UserError(f"job {' '.join(overrides)}: {err} No job was launched.") from None
