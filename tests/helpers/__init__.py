"""What the tests share: running src/train.py as users do, composing configs, small data, the SLURM cluster, W&B
run files, the data-parallel reference step."""
