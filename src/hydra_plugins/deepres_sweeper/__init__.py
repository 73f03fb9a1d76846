"""Hydra's basic sweeper, validating every job's config before launching any (a Hydra plugin, so it lives in the
hydra_plugins namespace; selected in conf/hydra/default.yaml)."""
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from deepres.errors import UserError


class ValidatingSweeper(BasicSweeper):
    """Hydra's basic sweeper, but every job's config is composed and validated before any job is launched, so a
    bad point in a grid costs seconds, not the hours of the jobs launched before it."""

    def validate_batch_is_legal(self, batch) -> None:
        from deepres.training.validate import check_data, validate  # here: plugin discovery must not load torch

        for overrides in batch:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            try:
                validate(cfg)
                check_data(cfg)
            except UserError as err:
                raise UserError(f"job {' '.join(overrides)}: {err} No job was launched.") from None
