"""``python -m avalanche_lpa``: the ``avalanche-lpa`` command (see ``--help``)."""
import sys

from avalanche_lpa.cli import console

if __name__ == "__main__":
    sys.exit(console())
