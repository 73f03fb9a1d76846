"""Data sets and the device-resident batch streams that feed them to the Trainer."""
