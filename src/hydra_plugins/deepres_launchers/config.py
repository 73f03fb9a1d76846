"""The launchers' configs, registered with Hydra's ConfigStore, so any Hydra app of the environment selects them:
hydra/launcher=deepres_local, deepres_slurm, deepres_packed or deepres_packed_slurm. (Prefixed, as upstream's
submitit_local: a plain `slurm` would collide with an app's own hydra/launcher/slurm.yaml. This project's conf/
extends them as local, slurm, packed and packed_slurm.) They extend hydra-submitit-launcher's configs with:

- max_pack_size, pack_key, pack_task: jobs that an app says may share a process (pack_key) run as one job, by the
  app's pack_task; without them (the defaults) every job runs alone, as under the unpacked launcher;
- array_parallelism for the local launcher (at most this many jobs at once, like a SLURM array's %N);
- detach (SLURM): submit the whole sweep and return at once; the same command later re-attaches;
- status_poll_s (SLURM): submitit checks job states with sacct ever less often, up to every 10 minutes: a job
  requeued or killed an hour into a sweep was seen half an hour late;
- SLURM resources left null are fitted to the partition's nodes (slurm_fit.py)."""
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

PACKAGE = "hydra_plugins.deepres_launchers"


@dataclass
class Packing:
    max_pack_size: int = 1         # >1: jobs with one pack_key run as one job of at most this many
    pack_key: str | None = None    # dotted path: fn(job config) -> hashable, or None for a job that runs alone
    pack_task: str | None = None   # dotted path: fn([(task config, hydra config), ...]) -> one return per job


@dataclass
class LocalConf(Packing, LocalQueueConf):
    _target_: str = f"{PACKAGE}.launchers.LocalLauncher"
    array_parallelism: int = 4     # jobs at once; the next starts when one ends
    gpus_per_node: int | None = 1  # CUDA_VISIBLE_DEVICES=0 for 1: the jobs share this machine's first GPU
    timeout_min: int = 10080       # a job still running after this long (7 days) is stopped


@dataclass
class SlurmConf(Packing, SlurmQueueConf):
    _target_: str = f"{PACKAGE}.slurm.SlurmLauncher"
    timeout_min: int = 1440        # the time limit of each job; near it SLURM warns (USR2, signal_delay_s before)
    max_num_timeout: int = 20      # and submitit requeues the job, at most this many times
    detach: bool = False           # true: submit every job as one array job and return; re-run to attach
    status_poll_s: int = 30        # at most this long between two sacct checks of the jobs (submitit: 2 s, 4, 8...)
    # cpus_per_task, gpus_per_node, mem_gb: null asks for the job's share of a node of the partition (slurm_fit.py)
    # shell lines run before the job; the default gives each task's threads the task's CPUs, not all of the node's
    setup: list[str] | None = field(default_factory=lambda: [
        'if [ -n "$SLURM_CPUS_PER_TASK" ]; then export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK; fi'])


def _register() -> None:
    store = ConfigStore.instance()
    for name, node in (("local", LocalConf()), ("slurm", SlurmConf()),
                       ("packed", LocalConf(max_pack_size=8)), ("packed_slurm", SlurmConf(max_pack_size=8))):
        store.store(group="hydra/launcher", name=f"deepres_{name}", node=node, provider="deepres_launchers")


_register()
