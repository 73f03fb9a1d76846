"""Plain and residual networks of the paper, built from one block vocabulary."""
from deepres.models.cifar import CifarResNet, depth_to_n
from deepres.models.imagenet import ImageNetResNet, table_1_row

__all__ = ["CifarResNet", "ImageNetResNet", "depth_to_n", "table_1_row"]
