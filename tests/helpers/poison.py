"""Files that run code when unpickled, as a hostile file from elsewhere would: each touches a marker file. Tests show
both that the project's readers refuse them with the marker absent and that a plain load of the same file creates it
(so the payload is real and the test can fail)."""
import pathlib
import pickle
from pathlib import Path

import torch


class Touch:
    """Unpickles as pathlib.Path(marker).touch(): the file appears when, and only when, the pickle is run."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def poisoned_checkpoint(path: Path, marker: Path, **plain) -> Path:
    """A torch.save file like a run's checkpoint (or a state dict), carrying a Touch."""
    torch.save({"state_dict": {"net.fc.weight": torch.zeros(10, 64)}, "global_step": 10, **plain,
                "hook": Touch(marker)}, path)
    return path


def poisoned_batch(path: Path, marker: Path) -> Path:
    """A CIFAR batch in the official layout's protocol whose data is a Touch."""
    with open(path, "wb") as f:
        pickle.dump({"data": Touch(marker), "labels": [0] * 10}, f, protocol=2)
    return path


def runs_under_plain_load(path: Path, marker: Path, load) -> bool:
    """Whether `load(path)` (an unguarded loader) creates the marker: the file really carries code."""
    assert not marker.exists()
    try:
        load(path)
    except Exception:  # the payload ran; what it left in place of data may not be what the caller expects
        pass
    return marker.exists()
