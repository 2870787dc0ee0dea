#!/usr/bin/env python
"""Split CIFAR-100 (B0) with LPAViT / GPSA / ViT: the paper study from a YAML config.

    python experiments/split_cifar100.py                                     # authors' recipe, 10 steps
    python experiments/split_cifar100.py --config cifar100_quick
    python experiments/split_cifar100.py --compare --seeds 1993 1994 1995
    python experiments/split_cifar100.py --output runs/X --resume            # continue an interrupted run

CIFAR-100 is read from Avalanche's dataset location (~/.avalanche/data/cifar100), or --data-root, and
downloaded there on first use unless --no-download.
"""
import sys

from avalanche_lpa.config.shipped import config_path
from avalanche_lpa.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], description=__doc__, default_config=config_path("cifar100_b0_10steps")))
