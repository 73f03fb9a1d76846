"""A Hydra app that is not this project (no deepres config, no trainer): its jobs return, or die without a result
(`die=true`: os._exit, as an out-of-memory kill ends a process). JobCounter records the callbacks that fire."""
import os
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback

ConfigStore.instance().store(name="config", node={"die": False, "value": 1})


class JobCounter(Callback):
    """Appends `start N` / `end N STATUS` to `path` for each job N."""

    def __init__(self, path: str):
        self.path = Path(path)

    def _add(self, line: str) -> None:
        with self.path.open("a") as f:
            f.write(line + "\n")

    def on_job_start(self, config, **kwargs) -> None:
        self._add(f"start {config.hydra.job.num}")

    def on_job_end(self, config, job_return, **kwargs) -> None:
        self._add(f"end {config.hydra.job.num} {job_return.status.name}")


@hydra.main(version_base="1.3", config_path=None, config_name="config")
def main(cfg) -> int:
    if cfg.die:
        os._exit(3)
    return cfg.value


if __name__ == "__main__":
    main()
