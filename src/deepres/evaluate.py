"""Evaluate a trained run under one of the paper's test protocols (ImageNet: Tables 2-4; CIFAR: the test set):

    python src/evaluate.py RUN_DIR [RUN_DIR ...] eval.mode=ten_crop [data.root=... data.num_workers=...]

An argument that is a directory, or has a / before its first =, is a run (sweep runs are named after overrides);
any other key=value is an override. Each run's composed config (.hydra/config.yaml) is read, the overrides applied,
and its final.ckpt (or, for an unfinished run, last.ckpt) evaluated. One line per run is printed, and
<run>/eval_<mode>.json written: test/error, test/top5_error, test/loss (as in metrics.csv), the checkpoint, its
iteration, the images evaluated. A CIFAR run has one view of its 32x32 test images: eval.mode=center.

Public weights become a run first: with model.weights=PATH, a RUN_DIR that is not a run yet is made the run of
those weights (conf/ composed with the overrides, as train.py composes it; the net in this project's layout as its
final.ckpt, at iteration 0), then evaluated; the reports (Fig. 7) read it as any finished run:

    python src/evaluate.py public/resnet-56 model.depth=56 model.weights=resnet56.th model.weights_format=akamaster
        data.normalization=fixed data.mean=[0.485,0.456,0.406] data.std=[0.229,0.224,0.225]   (one line)
"""
import json
import re
import sys
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from deepres.cli import CONF_DIR, explain
from deepres.config import register_resolvers
from deepres.errors import EXIT_USER_ERROR, UserError
from deepres.models import construct, initialised
from deepres.runs.atomic import atomic_write_text
from deepres.runs.run_dir import FINAL, LAST, RunDir
from deepres.safe_files import read_checkpoint
from deepres.training.bookkeeping import Bookkeeping
from deepres.training.module import Classifier
from deepres.training.quiet import quiet_lightning
from deepres.training.validate import validate

OVERRIDE = re.compile(r"[\w.+~@-]+=")  # key=value; a path with '=' in a name (a sweep's run) has a '/' before it
USAGE = ("usage: python src/evaluate.py RUN_DIR [RUN_DIR ...] eval.mode=center|ten_crop|multi_scale [key=value ...], "
         "or src/evaluate.py NEW_RUN_DIR model.weights=PATH model.weights_format=FORMAT [key=value ...]")


def _config(run: Path, overrides: list[str]):
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run} is not a run directory of src/train.py: it has no .hydra/config.yaml. {USAGE}")
    register_resolvers()  # the saved config keeps its interpolations (${if_cuda:...}): resolved on this machine
    cfg = OmegaConf.load(path)
    cifar = "eval" not in cfg  # CIFAR configs have no test protocols to choose
    if cifar:
        cfg.eval = {"mode": "center"}
    OmegaConf.set_struct(cfg, True)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as err:
        raise UserError(f"bad override for {run}: {str(err).splitlines()[0]}. {USAGE}") from None
    if cifar and cfg.eval.mode != "center":
        raise UserError(f"{run} is a {cfg.data.name} run: its test images are evaluated whole, eval.mode=center "
                        f"(not {cfg.eval.mode}); the other protocols are ImageNet's.")
    return cfg


def _checkpoint(run: Path) -> Path:
    for name in (FINAL, LAST):
        if (run / "checkpoints" / name).is_file():
            return run / "checkpoints" / name
    raise UserError(f"{run} has no checkpoints/{FINAL} or {LAST} to evaluate.")


def weights_run(run: Path, overrides: list[str]) -> None:
    """Make `run` the run directory of the weights of model.weights: .hydra/ as a run of train.py with these
    overrides would have it, checkpoints/final.ckpt (the net, converted from model.weights_format, at iteration 0),
    status.json completed."""
    register_resolvers()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    except HydraException as err:
        raise UserError(explain(err)) from None
    hydra = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    net = initialised(construct(cfg.model, instantiate(cfg.data).num_classes), cfg.model)
    folder = RunDir(run)
    folder.lock()
    try:
        (run / ".hydra").mkdir(exist_ok=True)
        for name, node in (("config", cfg), ("hydra", OmegaConf.create({"hydra": hydra})),
                           ("overrides", OmegaConf.create(overrides))):
            atomic_write_text(run / ".hydra" / f"{name}.yaml", OmegaConf.to_yaml(node))
        folder.checkpoints.mkdir(exist_ok=True)
        torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "global_step": 0},
                   folder.checkpoints / FINAL)
        folder.write_status(status="completed", weights=str(cfg.model.weights),
                            weights_format=cfg.model.weights_format)
    finally:
        folder.unlock()


def evaluate(run: str | Path, overrides: list[str]) -> dict:
    """Evaluate one run's checkpoint; returns (and writes to <run>/eval_<mode>.json) the result."""
    run = Path(run)
    cfg, checkpoint = _config(run, overrides), _checkpoint(run)
    datamodule = instantiate(cfg.data)
    net = construct(cfg.model, datamodule.num_classes)
    state = read_checkpoint(checkpoint)  # as data: a run directory may come from anywhere
    net.load_state_dict({k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")})
    module = Classifier(net, None, Bookkeeping([None]), datamodule.eval_names, top5=True)  # evaluation: no schedule
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.validate(module, datamodule, verbose=False)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    result = {"mode": cfg.eval.mode, **metrics, "checkpoint": str(checkpoint),
              "step": state["global_step"], "images": datamodule.test_images, "skipped": sorted(datamodule.skipped)}
    atomic_write_text(run / f"eval_{cfg.eval.mode}.json", json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str]) -> None:
    quiet_lightning()
    overrides = [a for a in argv if OVERRIDE.match(a) and not Path(a).is_dir()]
    runs = [a for a in argv if a not in overrides]
    weights = any(o.startswith("model.weights=") for o in overrides)
    try:
        if weights:
            if len(runs) != 1:
                raise UserError(f"model.weights makes one run directory of the weights: give one RUN_DIR (got "
                                f"{len(runs)}). {USAGE}")
            if not (Path(runs[0]) / ".hydra" / "config.yaml").is_file():
                weights_run(Path(runs[0]), [o for o in overrides if not o.startswith("eval.")])
        missing = [a for a in runs if not Path(a).is_dir()]
        if missing:
            raise UserError(f"no such run directory: {', '.join(missing)}. {USAGE}")
        if not runs:
            raise UserError(f"no run directory given. {USAGE}")
        for run in runs:
            r = evaluate(run, overrides)
            print(f"{run}: {r['mode']} top-1 error {r['test/error']:.2f}%, top-5 error {r['test/top5_error']:.2f}% "
                  f"({r['images']} images, iteration {r['step']})")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
