"""Fig. 7: the standard deviation of each 3x3 layer's response on the test set, from the final checkpoints of
plain-20/56 and ResNet-20/56/110. A response is a 3x3 conv's output after its BN and before the ReLU or the
addition, caught by a forward hook on that BN. Top: in network order; bottom: sorted in descending order.
The paper's claim: ResNets respond less than their plain twins, and deeper ResNets less per layer."""
import csv
import io

import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from deepres.errors import UserError
from deepres.models import CifarResNet
from deepres.report.runs import Net, Run, Sweep

NETS = (Net(False, 20), Net(False, 56), Net(True, 20, "A"), Net(True, 56, "A"), Net(True, 110, "A"))


@torch.no_grad()
def response_stds(net: CifarResNet, batches, device: torch.device) -> list[float]:
    """The std of every value each response layer (net.response_layers(): the BN after each 3x3 conv, in network
    order) outputs over all batches (images, channels, positions)."""
    layers = net.response_layers()
    sums = torch.zeros(len(layers), 3, dtype=torch.float64, device=device)  # count, sum, sum of squares

    def hook(index: int):
        def accumulate(module, inputs, output):
            y = output.double()
            sums[index] += torch.stack([torch.tensor(y.numel(), device=device, dtype=torch.float64), y.sum(),
                                        y.square().sum()])
        return accumulate

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        net.to(device)
        for x, _ in batches:
            net(x.to(device))
    finally:
        for handle in handles:
            handle.remove()
    count, total, squares = sums.T
    return (squares / count - (total / count) ** 2).clamp(min=0).sqrt().tolist()


def run_stds(run: Run, data_root: str | None = None) -> list[float]:
    """Response stds of a run's final checkpoint on its test set (read from `data_root` when given)."""
    datamodule = run.datamodule(data_root)
    datamodule.setup("validate")
    test = datamodule.val_dataloader()[datamodule.eval_names.index("test")]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return response_stds(run.trained_net(datamodule.num_classes), test, device)


def fig7_stds(sweep: Sweep, data_root: str | None = None) -> dict[Net, list[float]]:
    """Per net of Fig. 7 that has completed runs: the stds by layer, mean over its seeds."""
    groups = sweep.select(lambda n: n in NETS, "plain-20/56 or ResNet-20/56/110")
    stds = {}
    for net, runs in groups.items():
        per_seed = [run_stds(run, data_root) for run in runs if run.status == "completed"]
        if per_seed:
            stds[net] = [sum(values) / len(values) for values in zip(*per_seed)]
    if not stds:
        raise UserError(f"{sweep.path} holds no completed run of plain-20/56 or ResNet-20/56/110: Fig. 7 needs "
                        "their final checkpoints (python src/train.py -m +sweep=fig7).")
    return stds


def fig7(stds: dict[Net, list[float]], title: str = "Fig. 7") -> Figure:
    fig = Figure(figsize=(6.5, 6.5), layout="tight")
    top, bottom = fig.subplots(2, 1)
    for i, (net, values) in enumerate(stds.items()):
        style = {"color": colormaps["tab10"](i), "linestyle": "-" if net.residual else "--", "label": net.label()}
        top.plot(range(1, len(values) + 1), values, **style)
        bottom.plot(range(1, len(values) + 1), sorted(values, reverse=True), **style)
    top.set(xlabel="layer index (original)", ylabel="std", title=title)
    bottom.set(xlabel="layer index (sorted by magnitude)", ylabel="std")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def fig7_csv(stds: dict[Net, list[float]]) -> str:
    """net, layer (1 = the stem's 3x3 conv), std: the numbers behind the figure."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["net", "layer", "std"])
    writer.writerows((net.label(), i, f"{v:.6g}") for net, values in stds.items() for i, v in enumerate(values, 1))
    return out.getvalue()
