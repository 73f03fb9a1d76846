"""Detached SLURM sweeps: the sweep outlives the shell that started it.

`hydra.launcher.detach=true` submits every job of the sweep (packs included) as one array job, then one more job
that waits for the whole array (afterany) and ends the sweep as the launching process would have: on_job_end for
the jobs that died, then the sweep's on_multirun_end callbacks (an app's summary). It writes this record in the
sweep directory and exits at once. The same command run again on that sweep directory re-attaches: it submits
nothing, waits for the jobs still queued or running, and ends the sweep in this process. Once a sweep has been
attached to after its end, the record is spent: the next run of the command launches the sweep again."""
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.errors import CompactHydraException

RECORD = ".submitit/detached.json"


@dataclass
class Detached:
    sweep_dir: str
    groups: list[list[tuple[list[str], int]]]  # each submitit job's sweep jobs (overrides, number)
    job_ids: list[str]                         # each submitit job's SLURM id (array tasks: <array>_<index>)
    tasks: int                                 # SLURM tasks per job (nodes x tasks_per_node)
    folder: str                                # submitit's folder, %j for the job id
    end_job: str                               # the job that ends the sweep
    ended: bool = False                        # the end job has reported the jobs that died
    attached: bool = False                     # a process has attached to the ended sweep: the record is spent

    @classmethod
    def load(cls, sweep_dir: str | Path) -> "Detached | None":
        path = Path(sweep_dir) / RECORD
        if not path.is_file():
            return None
        record = cls(**json.loads(path.read_text()))
        record.groups = [[(list(overrides), idx) for overrides, idx in group] for group in record.groups]
        return record

    def save(self) -> None:
        path = Path(self.sweep_dir) / RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    def check_same(self, jobs: list[tuple[list[str], int]]) -> None:
        """Refuse to attach a command of other jobs to this sweep."""
        recorded = sorted(job for group in self.groups for job in group)
        if recorded != sorted(jobs):
            raise CompactHydraException(
                f"{self.sweep_dir} holds a detached sweep of other jobs ({len(recorded)} jobs, SLURM job "
                f"{self.job_ids[0].split('_')[0]}): run its own command to attach to it, or choose another "
                "hydra.sweep.dir.")

    def submitit_jobs(self) -> list:
        from submitit.slurm.slurm import SlurmJob

        return [SlurmJob(folder=self.folder, job_id=job_id, tasks=tuple(range(self.tasks))) for job_id in self.job_ids]


class EndSweep:
    """The job that ends a detached sweep once all of its array has ended (see the module's docstring)."""

    def __init__(self, launcher):
        self.launcher = launcher

    def __call__(self, singleton_state: dict) -> int:
        return self.launcher.end_detached(singleton_state)
