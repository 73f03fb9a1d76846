"""deepres: the experiments of "Deep Residual Learning for Image Recognition" as configurable sweeps."""
