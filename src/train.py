"""Train a net of the paper, or sweep many with -m:

    python src/train.py model.depth=56 model.residual=false
    python src/train.py -m model.depth=20,32,44,56 model.residual=true,false
"""
import hydra
from omegaconf import DictConfig

from deepres.cli import run_cli
from deepres.config import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> dict | None:
    from deepres.training.fit import run_job  # torch and Lightning: not for --help, --cfg or a refused override

    return run_job(cfg)


if __name__ == "__main__":
    run_cli(main)
