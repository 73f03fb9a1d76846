"""The SLURM launcher: the sweep's jobs (and packs) as one array job, with resources fitted to the partition
(slurm_fit.py), sbatch's refusals in one paragraph, and detached sweeps (detached.py).

Requeue has one owner, submitit: near the time limit SLURM sends USR2 (`signal_delay_s` before the end), submitit
requeues the job (`max_num_timeout` times), and the requeued job re-runs the same Hydra job in the same directory.
A job that SLURM preempts or that is `scontrol requeue`d re-runs the same way."""
import contextlib
import io
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, setup_globals

from hydra_plugins.deepres_launchers.detached import Detached, EndSweep
from hydra_plugins.deepres_launchers.launchers import Job, SweepLauncher
from hydra_plugins.deepres_launchers.slurm_fit import beyond, fit, partition_nodes, refusal

log = logging.getLogger(__name__)
# what the job that ends a detached sweep asks for: one CPU, after the whole array (dependency added)
END_JOB = {"nodes": 1, "tasks_per_node": 1, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 30, "gpus_per_node": None,
           "gpus_per_task": None, "gres": None, "cpus_per_gpu": None, "mem_per_gpu": None, "mem_per_cpu": None}


class SlurmLauncher(SweepLauncher):
    """One SLURM array job per sweep; SLURM runs at most `array_parallelism` of its tasks at once."""

    _EXECUTOR = "slurm"

    def __init__(self, detach: bool = False, status_poll_s: int = 30, **params: Any) -> None:
        super().__init__(**params)
        self.detach, self.status_poll_s = detach, status_poll_s
        self.attached: Detached | None = None

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        returns = super().launch(job_overrides, initial_job_idx)
        if self.attached is not None:  # the ended sweep is now this process's: a next run launches anew
            self.attached.attached = True
            self.attached.save()
        return returns

    def run_groups(self, jobs: list[Job]) -> list[tuple[Any, list[Job]]]:
        from submitit.slurm.slurm import SlurmJob

        SlurmJob.watcher._delay_s = self.status_poll_s  # the longest wait between sacct calls (submitit's: 600 s)
        sweep_dir = str(self.config.hydra.sweep.dir)
        record = Detached.load(sweep_dir)
        if record is not None and not record.attached:
            record.check_same(jobs)
            log.info(f"attached to the detached sweep {sweep_dir} (SLURM jobs {', '.join(record.job_ids)}): "
                     "waiting for its jobs to end")
            self.attached = record
            return list(zip(record.submitit_jobs(), record.groups))
        groups = self.groups(jobs)
        nodes = partition_nodes(self.params.get("partition"))
        fitted = {**self.params, **(fit(self.params, nodes) if nodes else {})}
        too_big = beyond(fitted, nodes) if nodes else None
        if too_big is not None:
            raise too_big
        submitted = self.submit_refusable(self.executor(**fitted), self.calls(groups), fitted, nodes)
        if self.detach:
            self.detach_sweep(submitted, groups, fitted, nodes)
        return list(zip(submitted, groups))

    def submit(self, executor, calls: list[tuple[Callable, tuple]]) -> list:
        with executor.batch():
            return [executor.submit(fn, *args) for fn, args in calls]

    def submit_refusable(self, executor, calls: list[tuple[Callable, tuple]], params: dict, nodes) -> list:
        """submit(), with sbatch's refusal as one paragraph (submitit's own print of it held back)."""
        from submitit.core.utils import FailedJobError

        held = io.StringIO()
        try:
            with contextlib.redirect_stderr(held):
                return self.submit(executor, calls)
        except FailedJobError as err:
            raise refusal(str(err), params, nodes) from None

    def detach_sweep(self, submitted: list, groups: list[list[Job]], params: dict, nodes) -> None:
        """Record the sweep, submit the job that ends it after the array, say how to re-attach, and exit."""
        sweep_dir = str(self.config.hydra.sweep.dir)
        array = submitted[0].job_id.split("_")[0]
        end = {**params, **END_JOB, "name": f"{params.get('name', 'sweep')}-end",
               "additional_parameters": {**params.get("additional_parameters", {}), "dependency": f"afterany:{array}"}}
        record = Detached(sweep_dir=sweep_dir, groups=groups, job_ids=[job.job_id for job in submitted],
                          tasks=params.get("nodes", 1) * params.get("tasks_per_node", 1),
                          folder=str(Path(params["submitit_folder"]).absolute()), end_job="")
        record.save()  # before the end job exists: it reads the record
        end_job = self.submit_refusable(self.executor(**end), [(EndSweep(self), (Singleton.get_state(),))], end,
                                        nodes)[0]
        record.end_job = end_job.job_id
        record.save()
        argv = sys.argv if any(a.startswith("hydra.sweep.dir=") for a in sys.argv) else [
            *sys.argv, f"hydra.sweep.dir={sweep_dir}"]
        print(f"detached: SLURM job {array} runs the sweep's {len(groups)} job(s); job {end_job.job_id} ends the sweep "
              f"after them. Sweep directory: {sweep_dir}\nTo wait for it and see its end, re-run: "
              f"python {' '.join(shlex.quote(a) for a in argv)}", flush=True)
        sys.exit(0)

    def reports_died(self) -> bool:
        if self.attached is None:
            return True
        record = Detached.load(self.attached.sweep_dir)
        return record is None or not record.ended

    def end_detached(self, singleton_state: dict) -> int:
        """In the job that ends a detached sweep: report the jobs that died, then the sweep's end callbacks; the
        exit status they asked for (an app's summary exits 1 when a job failed)."""
        Singleton.set_state(singleton_state)
        setup_globals()
        record = Detached.load(self.config.hydra.sweep.dir)
        for submitted, group in zip(record.submitit_jobs(), record.groups):
            self.returns(submitted, group)
        record.ended = True
        record.save()
        try:
            self.hydra_context.callbacks.on_multirun_end(config=self.config)
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else 1
        return 0
