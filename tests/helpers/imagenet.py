"""Small ImageNet DataModules for the data tests: 32x32 crops of a generated folder, no worker processes."""
from deepres.data.imagenet import ImageNetDataModule

SMALL = {"crop": 32, "scale": (36, 60), "eval_resize": 36, "eval_scales": (32, 40), "num_workers": 0}


def datamodule(root, **kw) -> ImageNetDataModule:
    return ImageNetDataModule(root=str(root), **{"batch_size": 4, "eval_batch_size": 3, **SMALL, **kw})


def run_hooks(dm, batch):
    """A batch through the DataModule's transfer hooks, as the Trainer moves it to the device."""
    return dm.on_after_batch_transfer(dm.on_before_batch_transfer(batch, 0), 0)
