"""Stand-in for ``wandb``, put on the path by ``benchmarks/gpu_check.sh`` only where wandb is not installed.

avalanche-lib 0.6 imports wandb whenever ``avalanche.evaluation.metrics`` is imported (``confusion_matrix.py``),
but uses it only inside its W&B logger and W&B confusion-matrix metric, which nothing in the check builds. The
real package would add a 20 MB wheel and a dozen dependencies to the offline wheel folder for an import that is
never used. Any use of this stand-in raises, so it cannot hide a real dependency on wandb.
"""
from typing import NoReturn


def __getattr__(name: str) -> NoReturn:
    # AttributeError, not ImportError: hasattr() and the import system probe modules with it.
    raise AttributeError(
        f"wandb.{name}: wandb is not installed here (this is benchmarks/gpu_check.sh's stand-in); pip install wandb"
    )
