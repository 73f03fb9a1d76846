"""Sweeps as SLURM array jobs, or N jobs side by side on one machine: hydra-submitit-launcher's launchers, selected
with hydra/launcher=slurm or hydra/launcher=local (conf/hydra/launcher/). A Hydra plugin, so it lives in the
hydra_plugins namespace.

Three changes to the originals:
- A job whose run has completed is not submitted again: re-launching a sweep queues only its unfinished jobs.
- A job that ends without a result (killed for memory, cancelled, out of time for good) does not abort the sweep:
  its status.json is marked failed with the scheduler's verdict, the other jobs' results are collected, and the
  sweep summary lists it (the command then exits 1).
- The local launcher runs at most `array_parallelism` jobs at once, like a SLURM array's `%N`.

Requeue has one owner, submitit: near the time limit SLURM sends USR2 (`signal_delay_s` before the end), submitit
requeues the job (`max_num_timeout` times), and the requeued job re-runs the same Hydra job in the same directory,
which resumes from checkpoints/last.ckpt. A job that SLURM preempts or that is `scontrol requeue`d re-runs the same
way. Lightning's own SLURM requeue (SIGUSR1) is switched off in the job (see `cluster_plugins`)."""
import logging
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)
_INIT_KEYS = ("submitit_folder", "max_num_timeout")


class _SweepLauncher(BaseSubmititLauncher):
    def _executor(self):
        import submitit

        init = {}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in _INIT_KEYS})
        return executor

    @abstractmethod
    def _submit(self, executor, job_args: list[tuple]) -> list:
        """Submit one job per element of job_args (the arguments of self.__call__); return the submitit jobs."""

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        """Submit the sweep's jobs, except those whose run has completed (a re-launched sweep does not queue them
        again), and wait for them all."""
        from deepres.run_dir import RunDir

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        returns, job_args = {}, []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            status = RunDir(self._job_dir(list(overrides))).status()
            finished = status.get("status") == "completed"
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}{' (finished: skipped)' if finished else ''}")
            if finished:
                returns[idx] = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=status)
            else:
                job_args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = self._submit(self._executor(), job_args) if job_args else []
        returns.update({args[2]: self._result(job, args[0]) for job, args in zip(jobs, job_args)})
        return [returns[idx] for idx in sorted(returns)]

    def _result(self, job, overrides: list[str]) -> JobReturn:
        """The job's JobReturn; for a job that ended without one, mark its run failed and return an empty one."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        from deepres.run_dir import RunDir

        try:
            return job.results()[0]
        except (UncompletedJobError, FailedJobError) as err:
            if isinstance(err, UncompletedJobError):
                verdict = f"ended {job.state} without a result"
            else:
                verdict = f"raised {str(err).strip().splitlines()[-1]}"
            reason = f"{self._EXECUTOR} job {job.job_id} {verdict} (log: {job.paths.stderr})"
            run = RunDir(self._job_dir(overrides))
            if run.status().get("status") in (None, "running"):  # it had no chance to record how it ended
                run.write_status(status="failed", overrides=" ".join(overrides), reason=reason)
            log.error(f"job {' '.join(overrides)}: {reason}")
            return JobReturn(overrides=overrides, status=JobStatus.COMPLETED)

    def _job_dir(self, overrides: list[str]) -> Path:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


class SlurmLauncher(_SweepLauncher):
    """One SLURM array job per sweep; SLURM runs at most `array_parallelism` of its tasks at once."""

    _EXECUTOR = "slurm"

    def _submit(self, executor, job_args: list[tuple]) -> list:
        return executor.map_array(self, *zip(*job_args))


class LocalLauncher(_SweepLauncher):
    """Each job in its own process on this machine, at most `array_parallelism` at once (they may share a GPU)."""

    _EXECUTOR = "local"

    def __init__(self, array_parallelism: int, **params: Any) -> None:
        super().__init__(**params)
        self.parallelism = array_parallelism

    def _submit(self, executor, job_args: list[tuple]) -> list:
        jobs = []
        for args in job_args:
            while sum(not job.done() for job in jobs) >= self.parallelism:
                time.sleep(0.5)
            jobs.append(executor.submit(self, *args))
        return jobs


def cluster_plugins() -> list:
    """Trainer plugins for the cluster the job runs on: under SLURM, Lightning's SLURM environment (ranks, nodes,
    master address for DDP) without its auto-requeue, since submitit owns requeueing."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
