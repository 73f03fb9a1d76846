"""The paper's figures and tables from a sweep directory's logs, written into that directory:

    python src/report.py multirun/cifar10 fig6 table6 fig1 fig7
    python src/report.py multirun/table5 table5
    python src/report.py multirun/table7 table7        (and multirun/table8 table8: Faster R-CNN's mAP)

Each report reads the runs' files only (metrics.csv, status.json, .hydra/, checkpoints; no W&B account needed);
Table 5 reads the ensembles' files (ensemble_<mode>.json), in a directory that need not hold runs."""
from collections.abc import Callable
from functools import cache
from pathlib import Path

from deepres.report import detection, fig7, figures, table5, tables
from deepres.report.plots import save
from deepres.report.runs import Sweep
from deepres.runs.atomic import atomic_write_text

# a report: (its directory, the runs there, its name, data_root) -> the paths written
Report = Callable[[Path, Callable[[], Sweep], str, str | None], list[Path]]


def _markdown(path: Path, text: str) -> list[Path]:
    atomic_write_text(path, text)
    return [path]


def _figure(make: Callable) -> Report:
    return lambda directory, sweep, name, data_root: save(make(sweep()), directory / name)


def _table(make: Callable) -> Report:
    return lambda directory, sweep, name, data_root: _markdown(directory / f"{name}.md", make(sweep(), data_root))


def _detection(make: Callable[[Sweep], str]) -> Report:
    return lambda directory, sweep, name, data_root: _markdown(directory / f"{name}.md", make(sweep()))


def _table5(directory: Path, sweep: Callable[[], Sweep], name: str, data_root: str | None) -> list[Path]:
    return _markdown(directory / f"{name}.md", table5.table5(directory))


def _fig7(directory: Path, sweep: Callable[[], Sweep], name: str, data_root: str | None) -> list[Path]:
    stds = fig7.fig7_stds(sweep(), data_root)
    atomic_write_text(directory / f"{name}.csv", fig7.fig7_csv(stds))
    title = f"Fig. 7: std of layer responses, {sweep().runs[0].config.data.name} test set"
    return save(fig7.fig7(stds, title), directory / name) + [directory / f"{name}.csv"]


REPORTS = {"fig1": _figure(figures.fig1), "fig4": _figure(figures.fig4), "fig6": _figure(figures.fig6),
           "fig7": _fig7, "table2": _table(tables.table2), "table3": _table(tables.table3),
           "table4": _table(tables.table4), "table5": _table5, "table6": _table(tables.table6),
           "table7": _detection(detection.table7), "table8": _detection(detection.table8)}


def write(sweep_dir: str | Path, names: list[str], data_root: str | None = None) -> list[Path]:
    """Write the named reports into the sweep directory; the paths written. `data_root`: where the data set is,
    when not where the runs read it (Fig. 7 runs the nets on the test set; tables count parameters)."""
    directory = Path(sweep_dir)
    sweep = cache(lambda: Sweep(directory))  # the runs, read once, by the reports that read runs
    return [path for name in names for path in REPORTS[name](directory, sweep, name, data_root)]
