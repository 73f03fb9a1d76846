"""What one data-parallel training step must compute, done here in one process: the first global batch of the run,
split into one slice per process, each slice through the net on its own (BN statistics per slice, as in a run
with model.bn_batch = the slice), the gradients averaged, one optimizer step."""
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from deepres.models import construct
from helpers.config import compose_config


def first_step(world_size: int, *overrides: str) -> tuple[float, dict[str, torch.Tensor]]:
    """(mean training loss of the first iteration, the net's parameters after it), built like train.py builds a run."""
    cfg = compose_config(*overrides)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    net = construct(cfg.model, datamodule.num_classes)
    datamodule.setup()
    x, y = next(iter(datamodule.train_dataloader()))
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    schedule = instantiate(cfg.schedule)
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr(0)
    loss = sum(F.cross_entropy(net(xs), ys) for xs, ys in zip(x.chunk(world_size), y.chunk(world_size))) / world_size
    loss.backward()
    optimizer.step()
    return loss.item(), {name: p.detach() for name, p in net.named_parameters()}


def assert_matches(run_dir: Path, world_size: int, *overrides: str) -> None:
    """The run's first logged loss and its weights after one iteration are the reference's, to float tolerance."""
    from deepres.runs.metrics_csv import read_rows

    loss, params = first_step(world_size, *overrides)
    first = read_rows(run_dir / "metrics.csv")[0]
    assert first["step"] == 1 and abs(first["train/loss"] - loss) < 1e-5, (first, loss)
    weights = torch.load(run_dir / "checkpoints" / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for name, p in params.items():
        torch.testing.assert_close(weights[f"net.{name}"], p, rtol=1e-5, atol=1e-6, msg=name)
