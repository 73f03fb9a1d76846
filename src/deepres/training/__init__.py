"""Training: from composed configs to objects (build), the LightningModule (module), its schedule, checkpoints,
progress bar and the checks of a config (validate); fit trains one run or a pack of them, recorded by deepres.runs."""
