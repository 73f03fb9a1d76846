"""Plain and residual networks of the paper, built from one block vocabulary."""
from deepres.models.cifar import CifarResNet, depth_to_n

__all__ = ["CifarResNet", "depth_to_n"]
