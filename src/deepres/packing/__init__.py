"""Packed runs: K runs of one architecture trained as one network of grouped layers (models/blocks.py with
members=K). plan: which runs may pack (configs only, no torch); members: the pack's net, optimiser and checkpoints
from and to its members' own; optimizer: SGD with one learning rate per member."""
