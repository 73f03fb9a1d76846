"""Plain and residual networks of the paper, built from one block vocabulary."""
from deepres.models.build import build, construct, initialised
from deepres.models.cifar import CifarResNet, depth_to_n
from deepres.models.imagenet import ImageNetResNet, table_1_row

NETS = (CifarResNet, ImageNetResNet)

__all__ = ["NETS", "CifarResNet", "ImageNetResNet", "build", "construct", "depth_to_n", "initialised", "table_1_row"]
