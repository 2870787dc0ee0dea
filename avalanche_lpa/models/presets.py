"""Presets of the LocalityViT family and their timm entry points.

After ``import avalanche_lpa`` these names work with ``timm.create_model`` (keyword arguments override the
preset): ``{lpa,gpsa,mhsa}_vit_cifar`` (the paper's CIFAR network), ``{lpa,gpsa,mhsa}_vit_imagenet``
(224 px, patch 16) and ``{lpa,gpsa,mhsa}_vit_tiny`` (a CPU-sized network for quick runs).
"""
from __future__ import annotations

from typing import Any, Dict

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .locality_vit import LocalityViT

__all__ = ["PRESETS", "ATTN_TYPES", "model_name"]

ATTN_TYPES = ("lpa", "gpsa", "mhsa")

_CIFAR_MEAN, _CIFAR_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: Constructor arguments of each preset (``attn_type`` is set by the entry point).
PRESETS: Dict[str, Dict[str, Any]] = {
    # The authors' CIFAR-100 network: 32 px, patch 4 (64 tokens), width 384, 12 heads, 5 + 1 blocks.
    "cifar": dict(img_size=32, patch_size=4, embed_dim=384, depth=5, num_heads=12, num_class_attn_blocks=1),
    # The ImageNet-100 network: same width and depth, 224 px, patch 16 (196 tokens).
    "imagenet": dict(img_size=224, patch_size=16, embed_dim=384, depth=5, num_heads=12, num_class_attn_blocks=1),
    # CPU-sized: 9 heads keep the 3x3 local neighbourhood of the paper's init.
    "tiny": dict(img_size=32, patch_size=4, embed_dim=72, depth=4, num_heads=9, num_class_attn_blocks=1),
}

_DATA_CFG = {
    "cifar": dict(input_size=(3, 32, 32), mean=_CIFAR_MEAN, std=_CIFAR_STD, num_classes=100),
    "imagenet": dict(input_size=(3, 224, 224), mean=_IMAGENET_MEAN, std=_IMAGENET_STD, num_classes=100),
    "tiny": dict(input_size=(3, 32, 32), mean=_CIFAR_MEAN, std=_CIFAR_STD, num_classes=100),
}


def model_name(attn_type: str, preset: str) -> str:
    """The registered timm name, e.g. ``model_name("lpa", "cifar") == "lpa_vit_cifar"``."""
    return f"{attn_type}_vit_{preset}"


def _cfg(preset: str) -> Dict[str, Any]:
    return dict(
        url="",
        crop_pct=1.0,
        interpolation="bicubic",
        first_conv="backbone.patch_embed.proj",
        classifier="classifier",
        license="apache-2.0",
        **_DATA_CFG[preset],
    )


default_cfgs = generate_default_cfgs(
    {model_name(a, p): _cfg(p) for a in ATTN_TYPES for p in PRESETS}
)


def _create(attn_type: str, preset: str, pretrained: bool = False, **kwargs) -> LocalityViT:
    name = model_name(attn_type, preset)
    if pretrained:
        raise ValueError(
            f"no pretrained weights exist for {name}; create it with pretrained=False and train it, "
            "or load your own checkpoint with model.load_state_dict(...)"
        )
    # timm fills num_classes from the data config; the package default is the growing Avalanche head.
    kwargs.setdefault("num_classes", None)
    # Where timm would download weights; timm >= 1.0 consumes it, 0.9 passes it on. There are no weights.
    kwargs.pop("cache_dir", None)
    args = {**PRESETS[preset], "attn_type": attn_type, **kwargs}
    return build_model_with_cfg(LocalityViT, name, pretrained=False, **args)


def _entry_point(attn_type: str, preset: str):
    def entry(pretrained: bool = False, **kwargs) -> LocalityViT:
        return _create(attn_type, preset, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = model_name(attn_type, preset)
    entry.__module__ = __name__
    entry.__doc__ = f"LocalityViT with {attn_type.upper()} attention, {preset} preset: {PRESETS[preset]}."
    return entry


for _attn in ATTN_TYPES:
    for _preset in PRESETS:
        _fn = register_model(_entry_point(_attn, _preset))
        globals()[_fn.__name__] = _fn
        __all__.append(_fn.__name__)
