"""A run's records: its directory (lock, status.json, checkpoints to resume from), its lifecycle (how a run or pack
of runs starts, stops and ends, and the exit status), metrics.csv, the sweep summary, signals, atomic writes.

Only metrics.csv (a Lightning logger) loads Lightning; the rest is read by the launcher plugins of every Hydra app."""
