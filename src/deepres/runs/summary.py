"""The sweep summary: one row per job (overrides, final errors or mAPs, steps, wall time, status), written at the
sweep root as summary.csv and summary.md when a multirun ends. Built from each job's status.json, so it also
summarises a sweep whose jobs ran elsewhere (SLURM) or crashed."""
import csv
import io
import json
import logging
import sys
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from deepres.runs.atomic import atomic_write_text
from deepres.runs.run_dir import STATUS, RunDir

log = logging.getLogger("deepres")
COLUMNS = ["job", "name", "overrides", "status", "steps", "train/error", "test/error", "val/error", "wall_time_s",
           "reason"]
CONSOLE_COLUMNS = ["name", "overrides", "train/error", "test/error", "steps", "wall_time_s", "status"]
MAPS = ["test/mAP50", "test/mAP"]  # a detector's results: columns after the errors when a job has them
ERRORS = ["train/error", "test/error", "val/error"]


def collect(sweep_dir: str | Path) -> list[dict]:
    """One row per job directory that holds a status.json."""
    rows = []
    for path in sorted(Path(sweep_dir).rglob(STATUS)):
        try:
            status = json.loads(path.read_text())
        except json.JSONDecodeError:
            status = {"status": "failed", "reason": f"unreadable {path}"}
        rows.append({"job": str(path.parent.relative_to(sweep_dir)),
                     **{k: status.get(k, "") for k in COLUMNS[1:] + MAPS}})
    return rows


def with_maps(rows: list[dict], columns: list[str]) -> list[str]:
    """`columns` with the mAP columns that some job has, after test/error."""
    maps = [c for c in MAPS if any(r[c] != "" for r in rows)]
    at = columns.index("test/error") + 1
    return columns[:at] + maps + columns[at:]


def shown(rows: list[dict], columns: list[str]) -> list[str]:
    """The columns of the tables read by people (summary.md, the console): a sweep of detectors only (an mAP, no
    error) without the error columns, which summary.csv keeps (its header only ever gains the mAPs)."""
    columns = with_maps(rows, columns)
    if any(r[c] != "" for r in rows for c in MAPS) and not any(r[c] != "" for r in rows for c in ERRORS):
        return [c for c in columns if c not in ERRORS]
    return columns


def _cell(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_summary(sweep_dir: str | Path) -> list[dict]:
    rows = collect(sweep_dir)
    out = io.StringIO()
    columns = with_maps(rows, COLUMNS)
    writer = csv.DictWriter(out, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(sweep_dir) / "summary.csv", out.getvalue())
    atomic_write_text(Path(sweep_dir) / "summary.md", table(rows, shown(rows, COLUMNS)))
    return rows


def table(rows: list[dict], columns: list[str]) -> str:
    """The rows as a Markdown table of `columns`."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]).replace("|", "/") for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Records a job that died without a result (the launcher reports it) as failed, writes the summary when a
    multirun ends, and exits 1 if any job did not complete."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        run = RunDir(config.hydra.runtime.output_dir)
        if run.status().get("status") in (None, "running"):  # it had no chance to record how it ended
            run.write_status(status="failed", overrides=" ".join(job_return.overrides or []),
                             reason=str(job_return._return_value))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir)
        failed = [r for r in rows if r["status"] != "completed"]
        print(table(rows, shown(rows, CONSOLE_COLUMNS)), end="")
        log.info(f"sweep summary: {sweep_dir / 'summary.md'} ({len(rows) - len(failed)} of {len(rows)} completed)")
        if failed:
            for r in failed:
                print(f"job {r['job']} {r['status']}: {r['reason']}", file=sys.stderr)
            sys.exit(1)

