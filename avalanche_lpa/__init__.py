"""avalanche-lpa: Locality-Preserved Attention for Vision Transformers in Avalanche continual learning."""
from . import layers, models  # noqa: F401  (importing models registers the timm entry points)
from .models import LocalityViT, LPAViT

__version__ = "0.1.0"

__all__ = ["LPAViT", "LocalityViT", "__version__", "layers", "load_run", "models"]


def __getattr__(name: str):
    # load_run lives in the experiment layer (it builds a run's model from its config); imported on first use so
    # that `import avalanche_lpa` stays light and the rooms below never import that layer.
    if name == "load_run":
        from .experiment.load import load_run

        return load_run
    raise AttributeError(f"module 'avalanche_lpa' has no attribute {name!r}")
