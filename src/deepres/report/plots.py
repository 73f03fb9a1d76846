"""The one plotting helper of Fig. 1, 4 and 6: error (%) against iterations (1e4), one colour per depth, training
error dashed (or thin), test error bold. A net that ran with several seeds is drawn as the mean over its seeds, in
a band of ± one standard deviation."""
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from deepres.report.runs import Net, Run

DASHED = {"linestyle": "--", "linewidth": 1.0}  # Fig. 1 and 6: training error
THIN = {"linewidth": 0.8}                      # Fig. 4: training error
BOLD = {"linewidth": 2.2}                      # test (or val) error


@dataclass
class Curve:
    """One line: a column of metrics.csv for the runs of one net."""

    net: Net
    runs: list[Run]
    key: str               # "train/error" or "test/error"
    style: dict
    legend: bool = True    # one legend entry per net: its test curve


@dataclass
class Panel:
    title: str
    curves: list[Curve]


def mean_curve(runs: list[Run], key: str) -> tuple[list[float], list[float], list[float]]:
    """Iterations (in units of 1e4), the mean value over the runs and its sample std (0 for one run), at the steps
    every run has logged."""
    curves = [dict(zip(*run.curve(key))) for run in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    values = [[c[s] for c in curves] for s in steps]
    return ([s / 1e4 for s in steps], [mean(v) for v in values],
            [stdev(v) if len(v) > 1 else 0.0 for v in values])


def depth_colours(panels: list[Panel]) -> dict[int, tuple]:
    depths = sorted({c.net.depth for p in panels for c in p.curves})
    return {d: colormaps["tab10"](i % 10) for i, d in enumerate(depths)}


def error_curves(panels: list[Panel], title: str, ylim: tuple[float, float]) -> Figure:
    """Panels side by side, iterations from 0. The y range is the paper's (`ylim`) when every curve ends inside it,
    else 0-100% (short runs end far above the paper's errors)."""
    fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="tight")
    axes = fig.subplots(1, len(panels), squeeze=False)
    colours = depth_colours(panels)
    for ax, panel in zip(axes[0], panels):
        ends = []
        for c in panel.curves:
            x, y, std = mean_curve(c.runs, c.key)
            label = c.net.label(shortcut=c.net.shortcut not in (None, "A")) if c.legend else None
            ax.plot(x, y, color=colours[c.net.depth], label=label, **c.style)
            if len(c.runs) > 1:
                ax.fill_between(x, [m - d for m, d in zip(y, std)], [m + d for m, d in zip(y, std)],
                                color=colours[c.net.depth], alpha=0.15, linewidth=0)
            ends += y[-1:]
        ax.set_ylim(*ylim if ends and all(ylim[0] <= e <= ylim[1] for e in ends) else (0, 100))
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set(title=panel.title, xlabel="iter. (1e4)", ylabel="error (%)")
        ax.grid(alpha=0.3)
        if panel.curves:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no such run in this sweep", ha="center", transform=ax.transAxes, color="grey")
    fig.suptitle(title, fontsize=9)
    return fig


def seeds_note(groups: dict[Net, list[Run]]) -> str:
    counts = sorted({len(runs) for runs in groups.values()})
    return ("one seed per net" if counts == [1] else
            f"mean (band: ± std) of {'/'.join(map(str, counts))} seeds per net")


def save(fig: Figure, stem: Path) -> list[Path]:
    """`stem`.png and `stem`.pdf."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths
