"""An ensemble of ImageNet runs (Table 5): nets of different depths over the same views of each val image, their
softmax averaged over the views and the nets.

The nets are evaluated side by side, batch by batch: each batch of views is read and decoded once and every net
sees the same tensor, and no net's scores of the whole val set are ever held (a batch's at a time). The runs must
therefore share the data set and the test protocol (`check_members` says which run differs), and their nets the
data set's classes (`check_classes`)."""
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from deepres.errors import UserError

# what decides the pixels a net sees: the images, their views, their normalisation
PROTOCOL = ("data.root", "data.crop", "data.mean", "data.std", "eval.mode", "eval.resize", "eval.scales")


class SoftmaxMean(nn.Module):
    """The ensemble's class scores: the log of the mean of the nets' softmax. Cross-entropy, top-1 and top-5 read
    them as logits; over several views (view_scores) their softmax is averaged again, and a mean over the views of
    means over the nets is each net's view-averaged softmax averaged over the nets."""

    def __init__(self, nets: Iterable[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([net(x).float().log_softmax(-1) for net in self.nets])
        return log_probs.logsumexp(0) - math.log(len(self.nets))


def _value(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key)
    if key == "data.root":  # one folder, however each run spells it
        return str(Path(value).expanduser().resolve())
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def check_members(runs: Sequence[Path], cfgs: Sequence[DictConfig]) -> None:
    """The runs are ImageNet runs, each given once, that see the same images under the same test protocol (their
    configs with the command line's overrides); a UserError naming the run or key that differs otherwise."""
    for run, cfg in zip(runs, cfgs):
        if cfg.data.name != "imagenet":
            raise UserError(f"{run} is a {cfg.data.name} run: eval.ensemble averages ImageNet nets over the views of "
                            f"the paper's test protocols (Table 5). Evaluate a {cfg.data.name} run on its own "
                            "(src/evaluate.py RUN), without eval.ensemble.")
    paths = [run.resolve() for run in runs]
    twice = sorted({str(run) for run, path in zip(runs, paths) if paths.count(path) > 1})
    if twice:
        raise UserError(f"{', '.join(twice)} given more than once: an ensemble counts each run once; give each run "
                        "directory once.")
    for key in PROTOCOL:
        values = [_value(cfg, key) for cfg in cfgs]
        if any(v != values[0] for v in values):
            listing = "; ".join(f"{run}: {value}" for run, value in zip(runs, values))
            raise UserError(f"the runs differ in {key} ({listing}). An ensemble averages its nets over the same "
                            f"views of the same images, so its runs share {', '.join(PROTOCOL)}. Set the key for "
                            f"every run on the command line ({key}=...) where the nets allow it, or leave the odd "
                            "run out.")


def check_classes(run: Path, state_dict: dict, num_classes: int, root: str) -> None:
    """The run's net (its checkpoint's FC layer) scores as many classes as data.root holds."""
    fc = state_dict.get("net.fc.weight")
    if fc is not None and fc.shape[0] != num_classes:
        raise UserError(f"{run} was trained on {fc.shape[0]} classes, but data.root={root} holds {num_classes} "
                        "class folders: a net is evaluated on the data set it was trained on (an ensemble's nets "
                        "all on one, with the same classes).")


def beside(runs: Sequence[Path]) -> Path:
    """The deepest directory holding every run (a sweep's directory): where eval.ensemble_dir=null writes."""
    return Path(os.path.commonpath([str(run.resolve().parent) for run in runs]))
