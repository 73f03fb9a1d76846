"""hydra-submitit-launcher's launchers, extended: a job that ends without a result is FAILED with the scheduler's
verdict (and its on_job_end callbacks fire here, since the job could not fire them), the local launcher runs at most
`array_parallelism` jobs at once, jobs that an app packs run as one job (`pack_key`, `pack_task`), and a SLURM sweep
can be submitted detached (detached.py) with resources fitted to the partition (slurm_fit.py).

A job runs as upstream runs it (BaseSubmititLauncher.__call__: the app's task function under run_job, callbacks
included), and nothing of a job is evaluated before it runs except, for packing, the config the job will see.
Imports neither torch nor the app: Hydra imports this module in every app of the environment."""
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.errors import CompactHydraException
from hydra.utils import get_method
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)
Job = tuple[list[str], int]  # a job of the sweep: its overrides and its number
INIT_KEYS = ("submitit_folder", "max_num_timeout")


class JobDied(CompactHydraException):
    """A job that ended without a result: killed (out of memory, cancelled), out of time for good, or exited."""


class SweepLauncher(BaseSubmititLauncher):
    def __init__(self, max_pack_size: int = 1, pack_key: str | None = None, pack_task: str | None = None,
                 **params: Any) -> None:
        if max_pack_size > 1 and (pack_key is None) != (pack_task is None):
            raise CompactHydraException("hydra.launcher.pack_key and hydra.launcher.pack_task go together: set both "
                                        f"(got pack_key={pack_key}, pack_task={pack_task}).")
        super().__init__(**params)
        self.max_pack_size, self.pack_key, self.pack_task = max_pack_size, pack_key, pack_task

    def executor(self, **changes: Any):
        """submitit's executor for these parameters (with `changes`), as upstream's launch builds it."""
        import submitit

        params = {**self.params, **changes}
        init = {f"{self._EXECUTOR}_max_num_timeout": params["max_num_timeout"]} if "max_num_timeout" in params else {}
        executor = submitit.AutoExecutor(folder=params["submitit_folder"], cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v
                                      for k, v in params.items() if k not in INIT_KEYS})
        return executor

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        jobs = [(list(overrides), idx) for idx, overrides in enumerate(job_overrides, start=initial_job_idx)]
        for overrides, idx in jobs:
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        returns = {}
        for submitted, group in self.run_groups(jobs):
            returns.update(self.returns(submitted, group))
        return [returns[idx] for idx in sorted(returns)]

    def reports_died(self) -> bool:
        """Whether on_job_end is still to fire for jobs that died (not if something fired it already)."""
        return True

    def run_groups(self, jobs: list[Job]) -> list[tuple[Any, list[Job]]]:
        """Submit the jobs, packed where the app packs them; each submitit job with its group of sweep jobs."""
        groups = self.groups(jobs)
        return list(zip(self.submit(self.executor(), self.calls(groups)), groups))

    def groups(self, jobs: list[Job]) -> list[list[Job]]:
        """The jobs in groups of one pack_key, at most max_pack_size each; a job that packs with none is alone."""
        if self.max_pack_size <= 1 or self.pack_key is None:
            return [[job] for job in jobs]
        key_of = get_method(self.pack_key)
        by_key: dict[Any, list[Job]] = {}
        for overrides, idx in jobs:
            key = key_of(self.job_config(overrides, idx, f"job_id_for_{idx}"))
            by_key.setdefault(("alone", idx) if key is None else ("key", key), []).append((overrides, idx))
        groups = [same[i:i + self.max_pack_size] for same in by_key.values()
                  for i in range(0, len(same), self.max_pack_size)]
        for group in groups:
            if len(group) > 1:
                log.info(f"\tpacked as one job: #{', #'.join(str(idx) for _, idx in group)}")
        return groups

    def calls(self, groups: list[list[Job]]) -> list[tuple[Callable, tuple]]:
        state = Singleton.get_state()
        return [(self, (group[0][0], "hydra.sweep.dir", group[0][1], f"job_id_for_{group[0][1]}", state))
                if len(group) == 1 else (PackJob(self), (group, state)) for group in groups]

    def submit(self, executor, calls: list[tuple[Callable, tuple]]) -> list:
        """Submit fn(*args) for each (fn, args) of calls; the submitit jobs."""
        raise NotImplementedError

    def job_config(self, overrides: list[str], idx: int, job_id: str) -> DictConfig:
        """The config job #idx runs with, its output directory included, as run_job completes it."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job) as job:
            job.id, job.num = job_id, idx
        HydraConfig.instance().set_config(cfg)
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = os.path.abspath(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir))
        return cfg

    def returns(self, submitted, group: list[Job]) -> dict[int, JobReturn]:
        """Each job's JobReturn, once the job has ended; a job that ended without one is FAILED with the scheduler's
        verdict, and its on_job_end callbacks fire here, as the job could not fire them."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            result = submitted.results()[0]
            return dict(zip((idx for _, idx in group), result if isinstance(result, list) else [result]))
        except (UncompletedJobError, FailedJobError) as err:
            if isinstance(err, UncompletedJobError):
                verdict = f"ended {submitted.state} without a result"
            else:
                verdict = f"raised {str(err).strip().splitlines()[-1]}"
            died = JobDied(f"{self._EXECUTOR} job {submitted.job_id} {verdict} (log: {submitted.paths.stderr})")
        returns, report = {}, self.reports_died()
        for overrides, idx in group:
            cfg = self.job_config(overrides, idx, submitted.job_id)
            task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            returns[idx] = JobReturn(overrides=overrides, cfg=task_cfg,
                                     hydra_cfg=OmegaConf.create({"hydra": cfg.hydra}),
                                     working_dir=os.getcwd(), task_name=cfg.hydra.job.name,
                                     status=JobStatus.FAILED, _return_value=died)
            log.error(f"job #{idx} {' '.join(overrides)}: {died}")
            if report:
                self.hydra_context.callbacks.on_job_end(config=cfg, job_return=returns[idx])
        return returns

    def run_pack(self, group: list[Job], singleton_state: dict) -> list[JobReturn]:
        """In the job: each member as a Hydra job of its own (its output directory, its callbacks), nested so that
        the innermost runs the app's pack_task on all of them; each member's run_job returns its own result."""
        import submitit

        Singleton.set_state(singleton_state)
        setup_globals()
        job_id = submitit.JobEnvironment().job_id
        configs = [self.job_config(overrides, idx, job_id) for overrides, idx in group]
        pack_task, members, results, returns = get_method(self.pack_task), [], [], [None] * len(group)

        def member(k: int) -> Callable[[DictConfig], Any]:
            def task(task_cfg: DictConfig) -> Any:
                members.append((OmegaConf.create(OmegaConf.to_container(task_cfg, resolve=True)),
                                OmegaConf.create(OmegaConf.to_container(HydraConfig.get(), resolve=True))))
                if k + 1 < len(configs):
                    returns[k + 1] = self.run_member(member(k + 1), configs[k + 1])
                else:
                    results.extend(pack_task(members))
                return results[k]
            return task

        returns[0] = self.run_member(member(0), configs[0])
        return returns

    def run_member(self, task: Callable[[DictConfig], Any], config: DictConfig) -> JobReturn:
        return run_job(hydra_context=self.hydra_context, task_function=task, config=config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class PackJob:
    """A pack as a submitit job, requeued (SLURM timeout, preemption) like a single job: it runs again in full and
    its members resume as the app resumes them."""

    def __init__(self, launcher: SweepLauncher):
        self.launcher = launcher

    def __call__(self, group: list[Job], singleton_state: dict) -> list[JobReturn]:
        return self.launcher.run_pack(group, singleton_state)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class LocalLauncher(SweepLauncher):
    """Each job in its own process on this machine, at most `array_parallelism` at once (they may share a GPU)."""

    _EXECUTOR = "local"

    def __init__(self, array_parallelism: int, **params: Any) -> None:
        super().__init__(**params)
        self.parallelism = array_parallelism

    def submit(self, executor, calls: list[tuple[Callable, tuple]]) -> list:
        jobs = []
        for fn, args in calls:
            while sum(not job.done() for job in jobs) >= self.parallelism:
                time.sleep(0.5)
            job = executor.submit(fn, *args)
            # submitit waits up to 15 s for a result file that a slow network filesystem may not show yet; a local
            # job writes it on this machine before it exits, so a job without one has died: say so at once
            job._results_timeout_s = 1
            jobs.append(job)
        return jobs
