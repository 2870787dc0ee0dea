#!/usr/bin/env python
"""ImageNet-100 (10 steps) with LPAViT / GPSA / ViT from a local ImageNet folder.

    python experiments/split_imagenet100.py --data-root /data/imagenet --class-list imagenet100.txt

Without --class-list the first 100 classes of <root>/train in sorted order are used (a warning says so).
"""
import sys
from pathlib import Path

from avalanche_lpa.experiment.cli import main

CONFIGS = Path(__file__).resolve().parent / "configs"

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], description=__doc__, default_config=CONFIGS / "imagenet100_10steps.yaml", imagenet=True))
