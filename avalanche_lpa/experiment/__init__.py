"""Experiment layer: configs, data, the run loop and reports (the only code that touches files and the CLI)."""
