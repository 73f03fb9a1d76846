"""Talking to the SLURM cluster the SLURM tests run on (started by `make slurm-up`; CI always starts one)."""
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# The small single-node CI cluster: one CPU and 1 GB per task, no GPUs; its sacct answers at once, so the sweeps
# check their jobs every 2 s (a requeue or a kill is seen then, not up to half the sweep's age later)
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.gpus_per_node=null", "trainer.accelerator=cpu", "hydra.launcher.status_poll_s=2"]


UNFINISHED = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED"}


def cluster_answers() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and re.search(r"^(idle|mixed|allocated|completing)", out.stdout, re.M) is not None


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 120, every: float = 0.1):
    """Poll until predicate() is truthy and return its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def array_tasks(sweep_dir: Path) -> list[str]:
    """The SLURM ids of a sweep's jobs (`<array>_<index>`, or `<job>` for a sweep of one), in submission order."""
    ids = [p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_submitted.pkl")]
    return sorted(ids, key=lambda i: tuple(int(n) for n in i.split("_")))


def states(job_id: str) -> list[str]:
    """Every state the finished job went through, from SLURM's accounting (a requeued job has a REQUEUED record).

    submitit hands back a job's result as soon as the job wrote it, a moment before SLURM records the job's end,
    so this waits until accounting no longer shows the job as pending or running."""
    def recorded() -> list[str] | None:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "--duplicates", "-o", "State", "-j", job_id],
                             capture_output=True, text=True, check=True).stdout
        found = [line.split()[0] for line in out.splitlines() if line.strip()]
        return found if found and found[-1] not in UNFINISHED else None

    return wait_for(f"SLURM to record the end of job {job_id}", recorded, timeout=60, every=0.5)


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-o", "%T", "-j", job_id], capture_output=True, text=True).stdout
    return out.strip()


def start_requeued(job_id: str) -> None:
    """A requeued job waits about 2 minutes before it may start again (SLURM's requeue hold); lift the hold."""
    wait_for(f"job {job_id} back in the queue", lambda: squeue_state(job_id) == "PENDING", timeout=60)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def job_log(sweep_dir: Path, job_id: str) -> str:
    """The job's stdout and stderr, over all its attempts (submitit appends)."""
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit" / job_id).glob("*_log.*")))
