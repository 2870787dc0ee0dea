"""Presets of the LocalityViT and DyTox families and their timm entry points, one ``@register_model`` function
per name.

After ``import avalanche_lpa.models`` (or ``import timm, avalanche_lpa``) these names work with ``timm.create_model`` (keyword arguments override the
preset): ``{lpa,gpsa,mhsa}_vit_cifar`` (the paper's CIFAR network), ``{lpa,gpsa,mhsa}_vit_imagenet``
(224 px, patch 16), ``{lpa,gpsa,mhsa}_vit_tiny`` (a CPU-sized network for quick runs), and the same networks
as DyTox models, ``dytox_{lpa,gpsa,mhsa}_{cifar,imagenet,tiny}`` (``dytox_gpsa_*`` is DyTox, ``dytox_lpa_*`` the
authors' DyTox+LPA).
"""
from __future__ import annotations

from typing import Any, Dict

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..data import DatasetInfo, dataset_info
from ..layers import ATTENTION_LAYERS
from .dytox import DyTox
from .locality_vit import LocalityViT

__all__ = ["PRESETS", "PRESET_DATASETS", "ATTN_TYPES", "model_name", "dytox_model_name"]

#: Attention types, from the one registry of attention layers.
ATTN_TYPES = tuple(ATTENTION_LAYERS)

#: The dataset (of the data room's table) each preset is sized for: its image size, patch, statistics and classes.
PRESET_DATASETS: Dict[str, str] = {"cifar": "cifar100", "imagenet": "imagenet100", "tiny": "cifar100"}


def _sized_for(preset: str) -> Dict[str, int]:
    """Image size and patch of the preset's dataset."""
    info = dataset_info(PRESET_DATASETS[preset])
    return dict(img_size=info.input_shape[-1], patch_size=info.patch_size)


#: Network arguments of each preset (``attn_type`` is set by the entry point).
PRESETS: Dict[str, Dict[str, Any]] = {
    # The authors' CIFAR-100 network: 32 px, patch 4 (64 tokens), width 384, 12 heads, 5 + 1 blocks.
    "cifar": dict(**_sized_for("cifar"), embed_dim=384, depth=5, num_heads=12, num_class_attn_blocks=1),
    # The ImageNet-100 network: same width and depth, 224 px, patch 16 (196 tokens).
    "imagenet": dict(**_sized_for("imagenet"), embed_dim=384, depth=5, num_heads=12, num_class_attn_blocks=1),
    # CPU-sized: 9 heads keep the 3x3 local neighbourhood of the paper's init.
    "tiny": dict(**_sized_for("tiny"), embed_dim=72, depth=4, num_heads=9, num_class_attn_blocks=1),
}


def _data_cfg(info: DatasetInfo) -> Dict[str, Any]:
    """timm's data config of a model for ``info``'s images."""
    return dict(input_size=info.input_shape, mean=info.mean, std=info.std, num_classes=info.num_classes)


def model_name(attn_type: str, preset: str) -> str:
    """The registered timm name, e.g. ``model_name("lpa", "cifar") == "lpa_vit_cifar"``."""
    return f"{attn_type}_vit_{preset}"


def dytox_model_name(attn_type: str, preset: str) -> str:
    """The registered timm name of a DyTox model, e.g. ``dytox_model_name("lpa", "cifar") == "dytox_lpa_cifar"``."""
    return f"dytox_{attn_type}_{preset}"


def _cfg(preset: str) -> Dict[str, Any]:
    return dict(
        url="",
        crop_pct=1.0,
        interpolation="bicubic",
        first_conv="backbone.patch_embed.proj",
        classifier="classifier",
        license="mit",  # this package's licence; no weights are published
        **_data_cfg(dataset_info(PRESET_DATASETS[preset])),
    )


default_cfgs = generate_default_cfgs(
    {name(a, p): _cfg(p) for name in (model_name, dytox_model_name) for a in ATTN_TYPES for p in PRESETS}
)


def _feature_cfg() -> Dict[str, Any]:
    """How ``features_only=True`` reads the blocks: through ``forward_intermediates`` (patch tokens on the grid,
    ``[B, C, rows, cols]``) where timm has that wrapper (1.0 on), else with hooks on the blocks (tokens ``[B, N, C]``)."""
    from timm.models import _features

    return dict(feature_cls="getter" if hasattr(_features, "FeatureGetterNet") else "hook")  # the getter: timm >= 1.0


_FEATURES = _feature_cfg()


def _fit_data_cfg(model: Any) -> Any:
    """The model's timm data config made true of the model as built: its input size (``img_size`` / ``in_chans``
    overrides), fixed (the position embedding has one grid), and for another channel count the mean and std of
    the preset's channels (a grey image of the preset's data), so ``resolve_data_config`` gives transforms it takes."""
    if not hasattr(model, "img_size"):  # timm's features_only wrapper: the config timm gave it
        return model
    cfg = dict(model.pretrained_cfg)
    channels, (height, width) = model.in_chans, model.img_size
    cfg.update(input_size=(channels, height, width), fixed_input_size=True)
    for key in ("mean", "std"):
        if len(cfg[key]) != channels:
            cfg[key] = (round(sum(cfg[key]) / len(cfg[key]), 4),) * channels
    model.pretrained_cfg = model.default_cfg = cfg
    return model


def _create(attn_type: str, preset: str, pretrained: bool = False, **kwargs: Any) -> LocalityViT:
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
    # A copy: timm pops keys of the feature config it is given.
    return _fit_data_cfg(build_model_with_cfg(LocalityViT, name, pretrained=False, feature_cfg=dict(_FEATURES), **args))


def _create_dytox(attn_type: str, preset: str, pretrained: bool = False, **kwargs: Any) -> DyTox:
    name = dytox_model_name(attn_type, preset)
    if pretrained:
        raise ValueError(f"no pretrained weights exist for {name}; create it with pretrained=False and train it")
    kwargs.pop("cache_dir", None)
    if kwargs.pop("num_classes", None) is not None:
        raise ValueError(f"{name} grows one head per experience; do not pass num_classes")
    kwargs.setdefault("joint_tokens", True)  # the authors' DyTox configs (joint_tokens: true); equal results
    args = {**PRESETS[preset], "attn_type": attn_type, **kwargs}
    # timm fills num_classes from the data config; DyTox has no such argument, so timm filters it out again.
    return _fit_data_cfg(build_model_with_cfg(DyTox, name, pretrained=False, kwargs_filter=("num_classes",), **args))


@register_model
def lpa_vit_cifar(pretrained: bool = False, **kwargs: Any) -> LocalityViT:
    """LPA ViT for 32 px CIFAR: patch 4, width 384, 12 heads, 5 LPA + 1 class-attention block (the paper's)."""
    return _create("lpa", "cifar", pretrained, **kwargs)


@register_model
def gpsa_vit_cifar(pretrained: bool = False, **kwargs: Any) -> LocalityViT:
    """The CIFAR network with ConViT's GPSA in the local blocks (the paper's baseline)."""
    return _create("gpsa", "cifar", pretrained, **kwargs)


@register_model
def mhsa_vit_cifar(pretrained: bool = False, **kwargs: Any) -> LocalityViT:
    """The CIFAR network with plain multi-head self-attention in the local blocks."""
    return _create("mhsa", "cifar", pretrained, **kwargs)


@register_model
def lpa_vit_imagenet(pretrained: bool = False, **kwargs: Any) -> LocalityViT:
    """LPA ViT for 224 px ImageNet-100: patch 16, width 384, 12 heads, 5 LPA + 1 class-attention block."""
    return _create("lpa", "imagenet", pretrained, **kwargs)


@register_model
def gpsa_vit_imagenet(pretrained: bool = False, **kwargs: Any) -> LocalityViT:
    """The ImageNet network with ConViT's GPSA in the local blocks."""
    return _create("gpsa", "imagenet", pretrained, **kwargs)


@register_model
def mhsa_vit_imagenet(pretrained: bool = False, **kwargs: Any) -> LocalityViT:
    """The ImageNet network with plain multi-head self-attention in the local blocks."""
    return _create("mhsa", "imagenet", pretrained, **kwargs)


@register_model
def lpa_vit_tiny(pretrained: bool = False, **kwargs: Any) -> LocalityViT:
    """A CPU-sized LPA ViT: 32 px, patch 4, width 72, 9 heads (3x3 local init), 4 LPA + 1 class-attention block."""
    return _create("lpa", "tiny", pretrained, **kwargs)


@register_model
def gpsa_vit_tiny(pretrained: bool = False, **kwargs: Any) -> LocalityViT:
    """The tiny network with ConViT's GPSA in the local blocks."""
    return _create("gpsa", "tiny", pretrained, **kwargs)


@register_model
def mhsa_vit_tiny(pretrained: bool = False, **kwargs: Any) -> LocalityViT:
    """The tiny network with plain multi-head self-attention in the local blocks."""
    return _create("mhsa", "tiny", pretrained, **kwargs)


@register_model
def dytox_lpa_cifar(pretrained: bool = False, **kwargs: Any) -> DyTox:
    """The authors' DyTox+LPA for 32 px CIFAR: the CIFAR network's LPA encoder, task tokens decoded by its TAB."""
    return _create_dytox("lpa", "cifar", pretrained, **kwargs)


@register_model
def dytox_gpsa_cifar(pretrained: bool = False, **kwargs: Any) -> DyTox:
    """DyTox for 32 px CIFAR (ConViT GPSA encoder, as Douillard et al.)."""
    return _create_dytox("gpsa", "cifar", pretrained, **kwargs)


@register_model
def dytox_mhsa_cifar(pretrained: bool = False, **kwargs: Any) -> DyTox:
    """DyTox for 32 px CIFAR with plain attention in the encoder."""
    return _create_dytox("mhsa", "cifar", pretrained, **kwargs)


@register_model
def dytox_lpa_imagenet(pretrained: bool = False, **kwargs: Any) -> DyTox:
    """DyTox+LPA for 224 px ImageNet-100 (patch 16)."""
    return _create_dytox("lpa", "imagenet", pretrained, **kwargs)


@register_model
def dytox_gpsa_imagenet(pretrained: bool = False, **kwargs: Any) -> DyTox:
    """DyTox for 224 px ImageNet-100 (GPSA encoder)."""
    return _create_dytox("gpsa", "imagenet", pretrained, **kwargs)


@register_model
def dytox_mhsa_imagenet(pretrained: bool = False, **kwargs: Any) -> DyTox:
    """DyTox for 224 px ImageNet-100 with plain attention in the encoder."""
    return _create_dytox("mhsa", "imagenet", pretrained, **kwargs)


@register_model
def dytox_lpa_tiny(pretrained: bool = False, **kwargs: Any) -> DyTox:
    """A CPU-sized DyTox+LPA (the tiny network's encoder)."""
    return _create_dytox("lpa", "tiny", pretrained, **kwargs)


@register_model
def dytox_gpsa_tiny(pretrained: bool = False, **kwargs: Any) -> DyTox:
    """A CPU-sized DyTox (GPSA encoder)."""
    return _create_dytox("gpsa", "tiny", pretrained, **kwargs)


@register_model
def dytox_mhsa_tiny(pretrained: bool = False, **kwargs: Any) -> DyTox:
    """A CPU-sized DyTox with plain attention in the encoder."""
    return _create_dytox("mhsa", "tiny", pretrained, **kwargs)
