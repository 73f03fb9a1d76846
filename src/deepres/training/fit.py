"""Training runs: train_members(members) fits one run, or a pack of runs as one network, each leaving what a run
leaves in its own directory (status.json, metrics.csv, its W&B run, checkpoints/last.ckpt and final.ckpt), recorded
by runs/lifecycle.py. run_job(cfg) is the Hydra task of src/train.py: one run, under the jobs' exit policy."""
import contextlib
import logging
import time
from collections.abc import Iterator

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from deepres.config import is_multirun, uses_cuda
from deepres.errors import Diverged, UserError
from deepres.runs.lifecycle import Member, mark_failed, recorded, report_outcome
from deepres.runs.metrics_csv import final_metrics
from deepres.runs.run_dir import RunDir
from deepres.runs.signals import Interrupted, graceful_stop
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.build import build_loggers, make_trainer
from deepres.training.checkpoints import MemberCheckpointIO, RunCheckpoints, checkpoint_bytes, resume_point
from deepres.training.quiet import quiet_lightning
from deepres.training.task import Task, task_of

log = logging.getLogger("deepres")
quiet_lightning()


def run_job(cfg: DictConfig) -> dict | None:
    """The Hydra task: a single run exits 2 on a user error; a sweep job records its failure and lets the sweep go
    on (the summary marks it, and the sweep's exit status says a job failed)."""
    if not is_multirun():
        ignored = [o for o in HydraConfig.get().overrides.hydra if o.lstrip("+~").startswith("hydra/launcher")]
        if ignored:
            log.warning(f"{ignored[0]} does nothing without -m: Hydra launches only multiruns, so this run trains "
                        "here, in this process; add -m to run it through the launcher (a sweep of one job).")
    return report_outcome(lambda: train(cfg), multirun=is_multirun())


def train(cfg: DictConfig) -> dict:
    """Fit one run in the Hydra output directory, resuming from its checkpoint if it has one; its status.json."""
    hydra_cfg = HydraConfig.get()
    member = Member(cfg, RunDir(hydra_cfg.runtime.output_dir), " ".join(hydra_cfg.overrides.task))
    return train_members([member])[0]


def train_pack(jobs: list[tuple[DictConfig, DictConfig]]) -> list[dict | None]:
    """The packed launchers' pack_task (conf/hydra/launcher/packed.yaml): the jobs (each its resolved config and its
    Hydra config) trained as one network, under a sweep job's exit policy; each job's status.json (None: failed)."""
    members = [Member(cfg, RunDir(hydra.runtime.output_dir), " ".join(hydra.overrides.task)) for cfg, hydra in jobs]
    if not uses_cuda(members[0].cfg.trainer.accelerator):
        log.warning("this pack trains on a CPU, where a network of K grouped convolutions is slower than K separate "
                    "runs (0.3-1x, benchmarks/README.md): packing pays on a GPU.")
    return report_outcome(lambda: train_members(members), multirun=True, what="pack") or [None] * len(members)


def train_members(members: list[Member]) -> list[dict]:
    """Train the runs as one network (one run: its own net) and return their status.json contents. A member that
    diverges is marked failed and frozen while the others finish; an error of the whole pack marks every
    unfinished member."""
    try:  # all that can be checked before anything is created
        task = task_of(members[0].cfg)
        task.check([member.cfg for member in members])
    except UserError:
        for member in members:
            member.run.remove_if_new()
        raise
    with recorded(members) as todo:
        if todo:
            for member in todo:  # the overrides; the whole config is in the run's .hydra/config.yaml
                log.info(f"{member.run.path}: {member.cfg.name}, {member.overrides or 'the defaults'}")
            _fit(task, todo)
    return [member.run.status() for member in members]


def _fit(task: Task, members: list[Member]) -> None:
    started, cfg, cfgs = time.time(), members[0].cfg, [m.cfg for m in members]
    previous_wall = [member.run.status().get("wall_time_s", 0.0) for member in members]
    together = {"pack": [m.run.path.name for m in members]} if len(members) > 1 else {}
    for member in members:
        member.run.write_status(status="running", name=member.cfg.name, overrides=member.overrides, reason="",
                                **together)
    if together:
        log.info(f"training {len(members)} runs as one network: {', '.join(together['pack'])}")
    datamodule = task.datamodule(cfgs)

    def on_failure(k: int, err: Diverged) -> None:
        explained = mark_failed(members[k].run, err)
        book.csvs[k].save()
        if book.live:
            log.error(f"{members[k].run.path}: {explained} The other runs of its pack go on.")

    book = Bookkeeping([instantiate(c.schedule) for c in cfgs], on_failure=on_failure)
    module = task.module(cfgs, datamodule, book)
    for member in members:
        member.run.check_free_space(checkpoint_bytes(module.net) // len(members))
    try:
        book.add_loggers(build_loggers(m.cfg, m.run) for m in members)

        def record_wall_time() -> None:  # kept while running: a run killed and resumed counts both parts
            for k in book.live:
                members[k].run.write_status(wall_time_s=round(previous_wall[k] + time.time() - started, 1))

        resumes = [resume_point(m.run, restart=m.cfg.get("resume") == "restart") for m in members]
        io = MemberCheckpointIO([m.run for m in members], resumes, lambda ckpt: book.split(ckpt, module, book.live),
                                lambda ckpts: book.merge(ckpts, module))
        trainer, checkpoints = make_trainer(cfg, members[0].run, io, record_wall_time)
        resume = next((path for path in resumes if path is not None), None)
        log.info(f"{', '.join(m.cfg.name for m in members)}: training to iteration {trainer.max_steps}"
                 + (f", resuming from {resume}" if resume else " from the start"))
        with compile_report() as compiled:
            fit(trainer, checkpoints, module, datamodule, resume)
        wall = time.time() - started
        for k in book.live:
            csv = book.csvs[k]
            csv.save()
            rows = (csv.rows[step] for step in sorted(csv.rows))
            members[k].run.write_status(status="completed", steps=trainer.global_step,
                                        **final_metrics(rows),
                                        wall_time_s=round(previous_wall[k] + wall, 1), **compiled)
    finally:
        _finish(book.loggers)


def fit(trainer: L.Trainer, checkpoints: RunCheckpoints, module: L.LightningModule, datamodule: L.LightningDataModule,
        ckpt_path) -> None:
    """Train to trainer.max_steps (from ckpt_path when given), evaluate the last iteration, save final.ckpt."""
    # Lightning ends a SIGTERM'd fit with SIGTERMException (exit status 0); our handler has saved the checkpoint by
    # then and Interrupted below gives the run its status and exit code.
    with graceful_stop(checkpoints.request_stop), contextlib.suppress(SIGTERMException):
        trainer.fit(module, datamodule, ckpt_path=ckpt_path)
    if checkpoints.stop_signal is not None and trainer.global_step < trainer.max_steps:
        raise Interrupted(checkpoints.stop_signal)
    if trainer.global_step % trainer.val_check_batch:
        trainer.validate(module, datamodule, verbose=False)
    checkpoints.save_final(trainer)


@contextlib.contextmanager
def compile_report() -> Iterator[dict]:
    """What torch.compile did meanwhile: {compile_graphs, compile_time_s} (empty when it compiled nothing), also
    logged. A compiled run compiles one training and one evaluation graph (evaluation runs under no_grad both inside
    fit and after it: trainer.inference_mode is false)."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    def now() -> tuple[int, float]:
        return counters["stats"]["unique_graphs"], sum(compilation_time_metrics.get("_compile.compile_inner", []))

    report, (graphs, seconds) = {}, now()
    yield report
    graphs_after, seconds_after = now()
    if graphs_after > graphs:
        report.update(compile_graphs=graphs_after - graphs, compile_time_s=round(seconds_after - seconds, 1))
        log.info(f"torch.compile: {report['compile_graphs']} graph(s) in {report['compile_time_s']} s")


def _finish(loggers: list[list]) -> None:
    """Close the runs' W&B runs that were started, so that the next job of a sweep (same process) starts its own."""
    for logger in (lg for member_loggers in loggers for lg in member_loggers[1:]):
        if getattr(logger, "_experiment", None) is not None:
            run = logger.experiment
            if run.offline:  # W&B's own banner is silenced (build_loggers): the one line that concerns the user
                log.info(f"W&B offline run {run.settings.sync_dir}: `wandb sync {run.settings.sync_dir}` uploads it")
            run.finish()
