#!/usr/bin/env python
"""Split Fashion-MNIST (5 experiences x 2 classes, 28 px, 1 channel) with LPAViT / GPSA / ViT on a CPU.

Reads Fashion-MNIST from Avalanche's dataset location (~/.avalanche/data/fashionmnist), or --data-root; on first
use it unpacks the Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist) there, or downloads
it (unless --no-download).

    python experiments/split_fashion_mnist.py --compare --seeds 1993 --output runs/fmnist
"""
import sys

from avalanche_lpa.config.shipped import config_path
from avalanche_lpa.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], description=__doc__, default_config=config_path("fashion_mnist")))
