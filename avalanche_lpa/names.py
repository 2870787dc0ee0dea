"""The names the command line checks before it imports anything heavy: attention types, strategies, the timm
prefix. Each list equals its registry (``models.ATTN_TYPES``, ``training.STRATEGIES``; a test holds them equal), so
``avalanche-lpa --help`` and a misspelled ``--model`` or ``--strategy`` answer without importing torch."""

__all__ = ["ATTENTION_TYPES", "DOWNLOADED_DATASETS", "STRATEGY_NAMES", "TIMM_PREFIX"]

#: The attention types of the LocalityViT family (``model.attn_type``; ``layers.ATTENTION_LAYERS``).
ATTENTION_TYPES = ("lpa", "gpsa", "mhsa")

#: The names of ``build_strategy`` (``strategy.name``; the strategy registry, ``training.registry.SPECS``).
STRATEGY_NAMES = (
    "naive", "replay", "lwf", "icarl", "der", "ewc", "gem", "er_ace", "lpa", "lpa_warmup", "dytox", "dytox_douillard",
    "dytox_plus_douillard", "agem", "si", "mas", "mir", "gdumb", "cumulative", "joint", "from_scratch", "bic", "lfl",
    "cwr", "scr", "slda", "gss", "er_aml", "feature_replay", "cope", "mer",
)

#: How a config names a timm model instead of an attention type (``model.name: timm:<name>``).
TIMM_PREFIX = "timm:"

#: The datasets a run downloads when they are missing (the dataset table's entries with a download), by title.
DOWNLOADED_DATASETS = ("CIFAR-100", "Fashion-MNIST", "Tiny-ImageNet", "CORe50")
