#!/usr/bin/env python
"""ImageNet-100 (10 steps) with LPAViT / GPSA / ViT from a local ImageNet folder.

    python experiments/split_imagenet100.py --data-root /data/imagenet --class-list imagenet100.txt

Without --class-list the first 100 classes of <root>/train in sorted order are used (a warning says so).
"""
import sys

from avalanche_lpa.config.shipped import config_path
from avalanche_lpa.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], description=__doc__, default_config=config_path("imagenet100_10steps"), imagenet=True))
