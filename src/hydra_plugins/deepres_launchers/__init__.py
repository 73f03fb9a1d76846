"""Sweeps as SLURM array jobs, or N jobs side by side on one machine: hydra-submitit-launcher's launchers, selected
with hydra/launcher=slurm or hydra/launcher=local (conf/hydra/launcher/). A Hydra plugin, so it lives in the
hydra_plugins namespace.

Four changes to the originals:
- A job whose run has completed is not submitted again: re-launching a sweep queues only its unfinished jobs.
- A job that ends without a result (killed for memory, cancelled, out of time for good) does not abort the sweep:
  its status.json is marked failed with the scheduler's verdict, the other jobs' results are collected, and the
  sweep summary lists it (the command then exits 1).
- The local launcher runs at most `array_parallelism` jobs at once, like a SLURM array's `%N`.
- With `max_pack_size` > 1 (hydra/launcher=packed or packed_slurm), jobs that may share a network
  (deepres.packing.plan) are submitted as packs, one submitit job each (`PackJob`), trained as one network by
  deepres.training.fit; the others as usual.

Requeue has one owner, submitit: near the time limit SLURM sends USR2 (`signal_delay_s` before the end), submitit
requeues the job (`max_num_timeout` times), and the requeued job re-runs the same Hydra job in the same directory,
which resumes from checkpoints/last.ckpt. A job that SLURM preempts or that is `scontrol requeue`d re-runs the same
way. Lightning's own SLURM requeue (SIGUSR1) is switched off in the job (deepres.training.build.cluster_plugins).

A plugin is imported by every Hydra app of the environment: this one loads neither torch nor Lightning (only
deepres.packing.plan and deepres.runs); a pack's job imports the training code when it runs."""
import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from deepres.config import uses_cuda
from deepres.packing.plan import pack_key
from deepres.runs.lifecycle import Member, report_outcome
from deepres.runs.run_dir import RunDir

log = logging.getLogger(__name__)
_INIT_KEYS = ("submitit_folder", "max_num_timeout")


class _SweepLauncher(BaseSubmititLauncher):
    def __init__(self, max_pack_size: int = 1, **params: Any) -> None:
        super().__init__(**params)
        self.max_pack_size = max_pack_size

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
    def _submit(self, executor, calls: list[tuple[Callable, tuple]]) -> list:
        """Submit fn(*args) for each (fn, args) of calls; return the submitit jobs."""

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        """Submit the sweep's jobs, except those whose run has completed (a re-launched sweep does not queue them
        again), runs that may share a network as packs of at most max_pack_size, and wait for them all."""
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        returns, todo = {}, []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            status = RunDir(self._job_dir(list(overrides))).status()
            finished = status.get("status") == "completed"
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}{' (finished: skipped)' if finished else ''}")
            if finished:
                returns[idx] = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=status)
            else:
                todo.append((list(overrides), idx))
        groups = self._packs(todo) if self.max_pack_size > 1 else [[job] for job in todo]
        state = Singleton.get_state()
        calls = [(self, (group[0][0], "hydra.sweep.dir", group[0][1], f"job_id_for_{group[0][1]}", state))
                 if len(group) == 1 else (PackJob(self), (group, state)) for group in groups]
        jobs = self._submit(self._executor(), calls) if calls else []
        for job, group in zip(jobs, groups):
            returns.update(self._results(job, group))
        return [returns[idx] for idx in sorted(returns)]

    def _packs(self, todo: list[tuple[list[str], int]]) -> list[list[tuple[list[str], int]]]:
        """The jobs in groups of those that may share a network (deepres.packing.plan.pack_key) and stand at the
        same iteration, at most max_pack_size each; a job that packs with no other is a group of one."""
        by_key: dict[tuple, list] = {}
        for overrides, idx in todo:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            key, step = pack_key(cfg), RunDir(_dir_of(cfg)).resume_step()
            by_key.setdefault((key, step) if key is not None else ("alone", idx), []).append((overrides, idx))
        groups = [jobs[i:i + self.max_pack_size] for jobs in by_key.values()
                  for i in range(0, len(jobs), self.max_pack_size)]
        for group in groups:
            if len(group) > 1:
                log.info(f"\tpacked as one network: #{', #'.join(str(idx) for _, idx in group)}")
        if any(len(group) > 1 for group in groups) and not uses_cuda(self.config.trainer.accelerator):
            log.warning("these packs train on a CPU, where a network of K grouped convolutions is slower than K "
                        "separate runs (0.3-1x, benchmarks/README.md): packing pays on a GPU.")
        return groups

    def run_pack(self, group: list[tuple[list[str], int]], singleton_state: dict) -> list[JobReturn]:
        """In the job: compose each member's config as Hydra composes a job's (its run directory, .hydra/ files),
        then train them together."""
        import submitit

        from deepres.training.fit import train_members

        Singleton.set_state(singleton_state)
        setup_globals()
        returns = []
        for overrides, idx in group:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(config.hydra.job) as job:
                job.id = submitit.JobEnvironment().job_id
                job.num = idx
            returns.append(run_job(hydra_context=self.hydra_context, task_function=_resolved, config=config,
                                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        members = [Member(ret.return_value, RunDir(ret.hydra_cfg.hydra.runtime.output_dir), " ".join(ret.overrides))
                   for ret in returns]
        statuses = report_outcome(lambda: train_members(members), multirun=True, what="pack") or [None] * len(members)
        for ret, status in zip(returns, statuses):
            ret.return_value = status
        return returns

    def _results(self, job, group: list[tuple[list[str], int]]) -> dict[int, JobReturn]:
        """The JobReturn of each job of the group (a pack returns one per member); for a job that ended without
        them, mark each run failed and return empty ones."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            result = job.results()[0]
            return dict(zip((idx for _, idx in group), result if isinstance(result, list) else [result]))
        except (UncompletedJobError, FailedJobError) as err:
            if isinstance(err, UncompletedJobError):
                verdict = f"ended {job.state} without a result"
            else:
                verdict = f"raised {str(err).strip().splitlines()[-1]}"
            reason = f"{self._EXECUTOR} job {job.job_id} {verdict} (log: {job.paths.stderr})"
            for overrides, _ in group:
                run = RunDir(self._job_dir(overrides))
                if run.status().get("status") in (None, "running"):  # it had no chance to record how it ended
                    run.write_status(status="failed", overrides=" ".join(overrides), reason=reason)
                log.error(f"job {' '.join(overrides)}: {reason}")
            return {idx: JobReturn(overrides=overrides, status=JobStatus.COMPLETED) for overrides, idx in group}

    def _job_dir(self, overrides: list[str]) -> Path:
        return _dir_of(self.hydra_context.config_loader.load_sweep_config(self.config, overrides))


def _dir_of(cfg: DictConfig) -> Path:
    """The run directory of a job's composed sweep config."""
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def _resolved(cfg: DictConfig) -> DictConfig:
    """A pack member's task: its config, resolved while Hydra holds the member's job context."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


class PackJob:
    """A pack as a submitit job, requeued (SLURM timeout, preemption) like a single job: it runs again in full and
    its members resume from their checkpoints."""

    def __init__(self, launcher: _SweepLauncher):
        self.launcher = launcher

    def __call__(self, group: list[tuple[list[str], int]], singleton_state: dict) -> list[JobReturn]:
        return self.launcher.run_pack(group, singleton_state)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SlurmLauncher(_SweepLauncher):
    """One SLURM array job per sweep; SLURM runs at most `array_parallelism` of its tasks at once."""

    _EXECUTOR = "slurm"

    def _submit(self, executor, calls: list[tuple[Callable, tuple]]) -> list:
        with executor.batch():
            return [executor.submit(fn, *args) for fn, args in calls]


class LocalLauncher(_SweepLauncher):
    """Each job in its own process on this machine, at most `array_parallelism` at once (they may share a GPU)."""

    _EXECUTOR = "local"

    def __init__(self, array_parallelism: int, **params: Any) -> None:
        super().__init__(**params)
        self.parallelism = array_parallelism

    def _submit(self, executor, calls: list[tuple[Callable, tuple]]) -> list:
        jobs = []
        for fn, args in calls:
            while sum(not job.done() for job in jobs) >= self.parallelism:
                time.sleep(0.5)
            jobs.append(executor.submit(fn, *args))
        return jobs

