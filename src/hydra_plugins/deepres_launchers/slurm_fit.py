"""SLURM resources that fit the partition, and sbatch's refusals in one paragraph.

A resource left null (gpus_per_node, cpus_per_task, mem_gb) asks for the job's share of one node of the partition,
as `sinfo` describes it: one GPU per task where the nodes have GPUs (none where they have none), and the CPUs and
memory that go with that many of the node's GPUs (all of a node without GPUs, split between its tasks). So one
command runs unchanged on a CPU partition and on a GPU one."""
import logging
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from hydra.errors import CompactHydraException

log = logging.getLogger(__name__)


class SlurmRefused(CompactHydraException):
    """sbatch refused the sweep's jobs; the message names SLURM's reason and the launcher keys to change."""


class SlurmUnreachable(CompactHydraException):
    """SLURM's controller does not answer: no launcher key helps; the message says how to check the cluster."""


UNREACHABLE = re.compile(r"unable to contact slurm controller|slurm_load_\w+: .*(connect|timed out)", re.I)


def unreachable(command: str, stderr: str) -> SlurmUnreachable:
    said = "; ".join(dict.fromkeys(re.sub(r"^sbatch: error: (Batch job submission failed: )?", "", line.strip())
                                   for line in stderr.splitlines() if line.strip()))
    return SlurmUnreachable(f"SLURM's controller does not answer ({command}: {said}), so no job was submitted; no "
                            "launcher setting changes that. Check the cluster with `sinfo` or `scontrol ping` (its "
                            "SLURM_CONF, the slurmctld host and its logs); the project's single-node test cluster "
                            "starts with `make slurm-up`. Without SLURM, hydra/launcher=local runs the sweep here.")


@dataclass(frozen=True)
class Nodes:
    """What every node of a partition has, at least."""

    partition: str
    cpus: int
    mem_mb: int
    gpus: int

    def __str__(self) -> str:
        return (f"partition {self.partition}'s nodes have {self.cpus} CPUs, {self.mem_mb // 1024} GB and "
                f"{self.gpus or 'no'} GPUs")


def partition_nodes(partition: str | None) -> Nodes | None:
    """The partition's (None: the default partition's) smallest node, from sinfo; None if sinfo cannot tell;
    SlurmUnreachable when the controller does not answer."""
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode and UNREACHABLE.search(out.stderr):
        raise unreachable("sinfo", out.stderr)
    rows = [line.split("|") for line in out.stdout.split() if line.count("|") == 3]
    if out.returncode or not rows:
        return None
    name = partition or next((p[:-1] for p, *_ in rows if p.endswith("*")), None)
    nodes = [(int(c), int(m.rstrip("+")), _gpus(g)) for p, c, m, g in rows if p.rstrip("*") == name]
    if not nodes:
        return None
    return Nodes(name, *(min(values) for values in zip(*nodes)))


def _gpus(gres: str) -> int:
    """GPUs in a node's GRES, e.g. 'gpu:8', 'gpu:a100:4(S:0-1)' or '(null)'."""
    return sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def fit(params: dict[str, Any], nodes: Nodes) -> dict[str, Any]:
    """The null resources of `params` set to the job's share of one of the partition's nodes."""
    tasks = max(1, params.get("tasks_per_node") or 1)
    gpus = params.get("gpus_per_node")
    fitted = {}
    if gpus is None and not any(params.get(k) for k in ("gres", "gpus_per_task")):
        gpus = min(tasks, nodes.gpus) if nodes.gpus else None
        fitted["gpus_per_node"] = gpus
    share = min(1.0, gpus / nodes.gpus) if gpus and nodes.gpus else 1.0
    if params.get("cpus_per_task") is None and params.get("cpus_per_gpu") is None:
        fitted["cpus_per_task"] = max(1, int(nodes.cpus * share) // tasks)
    if all(params.get(k) is None for k in ("mem_gb", "mem_per_cpu", "mem_per_gpu")):
        fitted["mem_gb"] = max(1, int(nodes.mem_mb * share) // 1024)
    if fitted:
        log.info(f"resources fitted to {nodes}: " + " ".join(f"{k}={v}" for k, v in fitted.items()))
    return fitted


def beyond(params: dict[str, Any], nodes: Nodes) -> SlurmRefused | None:
    """The refusal of a job bigger than every node of the partition, which sbatch may queue to wait forever."""
    tasks = max(1, params.get("tasks_per_node") or 1)
    asks = [("gpus_per_node", params.get("gpus_per_node") or 0, nodes.gpus, "GPUs"),
            ("cpus_per_task", (params.get("cpus_per_task") or 0) * tasks, nodes.cpus, "CPUs"),
            ("mem_gb", (params.get("mem_gb") or 0) * 1024, nodes.mem_mb, "MB of memory")]
    for key, wanted, has, what in asks:
        if wanted > has:
            return refusal(f"a job of {wanted} {what} per node fits on none of its nodes", params, nodes, [key])
    return None


# sbatch's reason -> the launcher keys that decide it (the first that matches)
KEYS_OF_REASON = [
    (r"gres|generic resource|gpu", ("gpus_per_node", "gpus_per_task", "gres")),
    (r"memory", ("mem_gb", "mem_per_cpu", "mem_per_gpu")),
    (r"cpu", ("cpus_per_task", "cpus_per_gpu", "tasks_per_node")),
    (r"account", ("account",)),
    (r"qos", ("qos",)),
    (r"partition", ("partition",)),
    (r"time limit", ("timeout_min",)),
    (r"node configuration|nodes", ("nodes", "tasks_per_node", "constraint", "exclude")),
]
ASKED = ("partition", "account", "qos", "nodes", "tasks_per_node", "gpus_per_node", "gpus_per_task", "gres",
         "cpus_per_task", "cpus_per_gpu", "mem_gb", "mem_per_cpu", "mem_per_gpu", "constraint", "timeout_min")


def refusal(sbatch_stderr: str, params: dict[str, Any], nodes: Nodes | None,
            keys: list[str] | None = None) -> SlurmRefused | SlurmUnreachable:
    """One paragraph: sbatch's reason, what was asked, what the nodes have, the key(s) to change (by default, those
    that decide the reason)."""
    if UNREACHABLE.search(sbatch_stderr):
        return unreachable("sbatch", sbatch_stderr)
    lines = [re.sub(r"^sbatch: error: (Batch job submission failed: )?", "", line.strip())
             for line in sbatch_stderr.splitlines() if line.strip()]
    reason = "; ".join(dict.fromkeys(lines)) or "no reason given"
    keys = keys or next((keys for pattern, keys in KEYS_OF_REASON if re.search(pattern, reason, re.I)), ASKED[:3])
    asked = ", ".join(f"{k}={params[k]}" for k in ASKED if params.get(k) is not None)
    change = " or ".join(f"hydra.launcher.{k}" for k in keys)
    where = f"; {nodes}" if nodes else ""
    return SlurmRefused(f"SLURM refused the sweep's jobs: {reason} (asked: {asked}{where}). Change {change}; a "
                        "resource left null asks for the job's share of a node of the partition.")
