"""Sweep launchers for any Hydra app: hydra/launcher=local, slurm, packed, packed_slurm (config.py). They are
hydra-submitit-launcher's, extended (launchers.py, slurm.py): a job that dies without a result is FAILED with the
scheduler's verdict, the local launcher runs at most `array_parallelism` jobs at once, jobs that the app packs
(`pack_key`, `pack_task`) run as one job, SLURM resources left null fit the partition, sbatch's refusals are one
paragraph, and a SLURM sweep can be detached from the shell that started it (detached.py).

A Hydra plugin, so it lives in the hydra_plugins namespace and is imported by every Hydra app of the environment:
nothing here imports torch, Lightning or the app."""
from hydra_plugins.deepres_launchers import config  # noqa: F401  (registers the launchers' configs)
from hydra_plugins.deepres_launchers.launchers import LocalLauncher
from hydra_plugins.deepres_launchers.slurm import SlurmLauncher

__all__ = ["LocalLauncher", "SlurmLauncher"]
