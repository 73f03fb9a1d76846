"""Fig. 1, 4 and 6: which nets go in which panel, drawn by plots.error_curves."""
from matplotlib.figure import Figure

from deepres.report.plots import BOLD, DASHED, THIN, Curve, Panel, error_curves, seeds_note
from deepres.report.runs import Net, Run, Sweep


def _train_and_test(groups: dict[Net, list[Run]], train_style: dict) -> list[Curve]:
    """Each net's training error (unlabelled) and test error (labelled), as the paper draws them."""
    return [curve for net, runs in groups.items() for curve in
            (Curve(net, runs, "train/error", train_style, legend=False), Curve(net, runs, "test/error", BOLD))]


def _steps(groups: dict[Net, list[Run]]) -> int:
    return max(run.steps for runs in groups.values() for run in runs)


def fig1(sweep: Sweep) -> Figure:
    """Training error (left) and test error (right) of plain-20 and plain-56: the degradation problem."""
    groups = sweep.select(lambda n: not n.residual and n.depth in (20, 56), "plain-20 or plain-56")
    panels = [Panel(title, [Curve(net, runs, key, BOLD) for net, runs in groups.items()])
              for title, key in (("training error", "train/error"), ("test error", "test/error"))]
    return error_curves(panels, f"Fig. 1: plain nets on {sweep.runs[0].config.data.name}, up to "
                                f"{_steps(groups)} iterations, {seeds_note(groups)}", ylim=(0, 20))


def fig6(sweep: Sweep) -> Figure:
    """Left: plain nets. Middle: ResNets up to 110 layers. Right: ResNet-110 and deeper (the paper's 1202)."""
    groups = sweep.select(lambda n: True, "plain or residual nets")
    plain = {n: r for n, r in groups.items() if not n.residual}
    resnets = {n: r for n, r in groups.items() if n.residual and n.depth < 1202}
    deepest = {n: r for n, r in groups.items() if n.residual and n.depth >= 110}
    panels = [Panel("plain", _train_and_test(plain, DASHED)), Panel("ResNet", _train_and_test(resnets, DASHED)),
              Panel("ResNet-110 vs 1202", _train_and_test(deepest, DASHED))]
    return error_curves(panels, f"Fig. 6: {sweep.runs[0].config.data.name}, dashed = training error, bold = test "
                                f"error; up to {_steps(groups)} iterations, {seeds_note(groups)}", ylim=(0, 20))


def fig4(sweep: Sweep) -> Figure:
    """ImageNet: plain-18/34 (left) and ResNet-18/34 with shortcut A (right); thin = training, bold = val error."""
    groups = sweep.select(lambda n: n.depth in (18, 34) and n.shortcut in (None, "A"),
                          "plain-18/34 or ResNet-18/34 (shortcut A)")
    panels = [Panel("plain", _train_and_test({n: r for n, r in groups.items() if not n.residual}, THIN)),
              Panel("ResNet", _train_and_test({n: r for n, r in groups.items() if n.residual}, THIN))]
    return error_curves(panels, f"Fig. 4: ImageNet, thin = training error, bold = val error (centre crop); up to "
                                f"{_steps(groups)} iterations, {seeds_note(groups)}", ylim=(20, 60))
