"""A timm model from a config (``model.name: timm:<name>``), checked against the dataset before a run starts.

The runner builds it with :func:`~avalanche_lpa.models.timm_classifier`: ``timm.create_model(name,
num_classes=0, pretrained=False, img_size=<data>, in_chans=<data>, patch_size=<config>, **model.kwargs)``
under the config's head (``model.head``; a fixed linear head where the strategy's registry entry needs one). The
image size and channels come from the dataset, the patch size from the config (``model.overrides.patch_size``, else
the preset's), so a timm model sees the same patch grid as the LocalityViT models it is compared with;
``model.kwargs`` overrides any of them, and a ``null`` value drops one that a model does not take.
``pretrained: true`` in ``model.kwargs`` loads timm's weights (a download); nothing is downloaded otherwise.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Tuple

import torch

from ..models import (
    PRESETS,
    TIMM_PREFIX,
    TimmClassifier,
    attention_sites,
    record_attention_maps,
    restored_modes,
    supported_attention_classes,
    timm_classifier,
    timm_model_name,
)
from ..training import strategy_entry
from .config import ConfigError
from .data import input_shape

__all__ = ["build_timm_model", "check_timm_input", "model_label", "model_slug", "select_model", "timm_kwargs"]


def model_label(config: Dict[str, Any]) -> str:
    """What a run trains, as results.json names it: ``timm:<name>``, or the registered timm name in the model family
    of the strategy's registry entry (``lpa_vit_tiny``; ``dytox_lpa_tiny`` under the ``dytox`` strategy)."""
    model = config["model"]
    if model.get("name"):
        return model["name"]
    return strategy_entry(config["strategy"]["name"]).model.name(model["attn_type"], model["preset"])


def model_slug(config: Dict[str, Any]) -> str:
    """The ``{model}`` field of run names and folders: the attention type, or ``timm-<name>`` for a timm model."""
    model = config["model"]
    return model["name"].replace(":", "-", 1) if model.get("name") else model["attn_type"]


def select_model(config: Dict[str, Any], model: str) -> Dict[str, Any]:
    """A copy of ``config`` that trains ``model``: an attention type (``lpa``) or a timm spec (``timm:<name>``).

    Choosing a LocalityViT type clears ``model.name``; ``model.kwargs`` stays (only timm models read it).
    """
    config = copy.deepcopy(config)
    if model.startswith(TIMM_PREFIX):
        config["model"]["name"] = model
    else:
        config["model"].update(attn_type=model, name=None)
    return config


def timm_kwargs(config: Dict[str, Any]) -> Dict[str, Any]:
    """The keywords for ``timm.create_model``: the data's image size and channels, the config's patch size,
    then ``model.kwargs`` (a ``None`` value drops that keyword)."""
    channels, height, width = input_shape(config["data"])
    model = config["model"]
    patch = model["overrides"].get("patch_size", PRESETS[model["preset"]]["patch_size"])
    defaults = {"img_size": height if height == width else (height, width), "in_chans": channels, "patch_size": patch}
    merged = {**defaults, **(model.get("kwargs") or {})}
    return {key: value for key, value in merged.items() if value is not None}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {text[:300]}"


def check_timm_input(model: TimmClassifier, shape: Tuple[int, int, int], spec: str) -> None:
    """Raises :class:`ConfigError` unless ``model`` takes ``shape`` images, returns ``[B, D]`` features and has
    attention layers whose maps the locality metric can read."""
    channels, height, width = shape
    fix = "set model.kwargs (img_size, in_chans, patch_size) to fit them"
    x = torch.zeros(2, channels, height, width)
    with restored_modes(model), torch.no_grad():
        model.eval()
        try:
            features = model.backbone(x)
        except Exception as error:  # whatever the model raises for an input it cannot take
            raise ConfigError(
                f"model.name {spec}: the model cannot take the dataset's {channels}x{height}x{width} images "
                f"({_one_line(error)}); {fix}"
            ) from None
        if tuple(features.shape) != (2, model.num_features):
            raise ConfigError(
                f"model.name {spec}: the model returns features of shape {list(features.shape)} for 2 images, "
                f"not [2, {model.num_features}]; give it a pooling (e.g. model.kwargs.global_pool: token)"
            )
        sites = attention_sites(model.backbone)
        if not sites:
            raise ConfigError(
                f"model.name {spec}: it has no attention layer the locality metric can read (supported: "
                f"{', '.join(supported_attention_classes())}); choose a ViT, DeiT or ConViT, or register the "
                "family with avalanche_lpa.metrics.register_attention_adapter"
            )
        try:
            maps = record_attention_maps(model.backbone, lambda: model.backbone(x), sites)
        except ValueError as error:
            raise ConfigError(f"model.name {spec}: the locality metric cannot read its attention ({_one_line(error)})") from None
        idle = [site.name for site, attn in zip(sites, maps) if attn is None]
        if idle:
            raise ConfigError(
                f"model.name {spec}: attention layers {', '.join(idle)} do not run in the forward pass; the "
                "locality metric needs every attention layer to be used"
            )


def build_timm_model(config: Dict[str, Any], num_classes: Optional[int]) -> TimmClassifier:
    """The timm model of a config under its head (``num_classes``: a fixed head, e.g. for iCaRL; else ``None``).

    Raises:
        ConfigError: timm cannot build the model with these keywords, or the model cannot take the dataset's
            images (one line naming the keywords to change).
    """
    spec = config["model"]["name"]
    try:
        name = timm_model_name(spec)
    except ValueError as error:
        raise ConfigError(f"model.name: {error}") from None
    kwargs = timm_kwargs(config)
    pretrained = bool(kwargs.pop("pretrained", False))
    try:
        model = timm_classifier(name, num_classes=num_classes, head_type=config["model"]["head"],
                                pretrained=pretrained, **kwargs)
    except Exception as error:  # timm raises TypeError, ValueError, AssertionError ... for keywords it cannot take
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ConfigError(
            f"model.name {spec}: timm.create_model({name!r}, {shown}) failed ({_one_line(error)}); fix model.kwargs "
            "(a null value drops a keyword the model does not take)"
        ) from None
    check_timm_input(model, input_shape(config["data"]), spec)
    if config["model"]["compile"]:
        model.backbone.compile()  # in place, as for LocalityViT: state-dict keys stay as they are
    return model
