"""The paper's figures and tables from a sweep directory's logs, written into that directory:

    python src/report.py multirun/cifar10 fig6 table6 fig1 fig7

Each report reads the runs' files only (metrics.csv, status.json, .hydra/, checkpoints; no W&B account needed)."""
from collections.abc import Callable
from pathlib import Path

from deepres.report import fig7, figures, tables
from deepres.report.plots import save
from deepres.report.runs import Sweep
from deepres.runs.atomic import atomic_write_text


def _figure(make: Callable) -> Callable[[Sweep, str, str | None], list[Path]]:
    return lambda sweep, name, data_root: save(make(sweep), sweep.path / name)


def _table(make: Callable) -> Callable[[Sweep, str, str | None], list[Path]]:
    def write(sweep: Sweep, name: str, data_root: str | None) -> list[Path]:
        atomic_write_text(sweep.path / f"{name}.md", make(sweep, data_root))
        return [sweep.path / f"{name}.md"]
    return write


def _fig7(sweep: Sweep, name: str, data_root: str | None) -> list[Path]:
    stds = fig7.fig7_stds(sweep, data_root)
    atomic_write_text(sweep.path / f"{name}.csv", fig7.fig7_csv(stds))
    title = f"Fig. 7: std of layer responses, {sweep.runs[0].config.data.name} test set"
    return save(fig7.fig7(stds, title), sweep.path / name) + [sweep.path / f"{name}.csv"]


REPORTS = {"fig1": _figure(figures.fig1), "fig4": _figure(figures.fig4), "fig6": _figure(figures.fig6),
           "fig7": _fig7, "table2": _table(tables.table2), "table3": _table(tables.table3),
           "table4": _table(tables.table4), "table6": _table(tables.table6)}


def write(sweep_dir: str | Path, names: list[str], data_root: str | None = None) -> list[Path]:
    """Write the named reports into the sweep directory; the paths written. `data_root`: where the data set is,
    when not where the runs read it (Fig. 7 runs the nets on the test set; tables count parameters)."""
    sweep = Sweep(sweep_dir)
    return [path for name in names for path in REPORTS[name](sweep, name, data_root)]
