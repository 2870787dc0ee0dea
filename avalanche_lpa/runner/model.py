"""The run's device and model: the config's model family through timm's registry, or any timm model
(``model.name: timm:<name>``) checked against the dataset before a run starts; a finished run's ``model.pt``.

A timm model is built with :func:`~avalanche_lpa.models.timm_classifier`: ``timm.create_model(name,
num_classes=0, pretrained=False, img_size=<data>, in_chans=<data>, patch_size=<config>, **model.kwargs)``
under the config's head (``model.head``; a fixed linear head where the strategy's registry entry needs one). The
image size and channels come from the dataset, the patch size from the config (``model.overrides.patch_size``, else
the preset's), so a timm model sees the same patch grid as the LocalityViT models it is compared with;
``model.kwargs`` overrides any of them, and a ``null`` value drops one that a model does not take.
``pretrained: true`` in ``model.kwargs`` loads timm's weights (from timm's cache, downloaded there on first use;
``pretrained_cfg_overlay: {file: <path>}`` reads a local file); the model then keeps its own input size and patch,
and the data pipeline brings the images to its size and normalisation (:func:`model_input`: a CIFAR image goes to
224 px for a ViT-B/16). Nothing is downloaded otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import timm
import torch

from ..config.schema import RunConfig
from ..config.validation import DEVICE_HINT, check_device
from ..data import ModelInput
from ..errors import ConfigError, one_line
from ..models import (
    PRESETS,
    TimmClassifier,
    attention_sites,
    convert_to_lpa,
    record_attention_maps,
    restored_modes,
    supported_attention_classes,
    timm_classifier,
    timm_model_name,
)
from ..training import strategy_entry
from .benchmark import input_shape

__all__ = [
    "build_model", "build_timm_model", "check_model_input", "check_timm_input", "load_model_file", "model_input", "model_label", "model_slug",
    "parameter_count", "resolve_device", "timm_kwargs",
]


def model_label(config: RunConfig) -> str:
    """What a run trains, as results.json names it: ``timm:<name>``, or the registered timm name in the model family
    of the strategy's registry entry (``lpa_vit_tiny``; ``dytox_lpa_tiny`` under the ``dytox`` strategy)."""
    model = config.model
    if model.name:
        return model.name
    return strategy_entry(config.strategy.name).model.name(model.attn_type, model.preset)


def model_slug(config: RunConfig) -> str:
    """The ``{model}`` field of run names and folders: the attention type, or ``timm-<name>`` for a timm model."""
    model = config.model
    return model.name.replace(":", "-", 1) if model.name else model.attn_type


def _pretrained(config: RunConfig) -> bool:
    return bool(config.model.name) and bool((config.model.kwargs or {}).get("pretrained"))


def timm_kwargs(config: RunConfig) -> Dict[str, Any]:
    """The keywords for ``timm.create_model``: the data's image size and channels, the config's patch size,
    then ``model.kwargs`` (a ``None`` value drops that keyword). A pretrained model keeps its own image size and
    patch (the data is brought to them, :func:`model_input`); only the channels are the data's."""
    channels, height, width = input_shape(config.data)
    model = config.model
    patch = model.overrides.get("patch_size", PRESETS[model.preset]["patch_size"])
    defaults = {"img_size": height if height == width else (height, width), "in_chans": channels, "patch_size": patch}
    if _pretrained(config):
        defaults = {"in_chans": channels}
    merged = {**defaults, **(model.kwargs or {})}
    return {key: value for key, value in merged.items() if value is not None}


def model_input(config: RunConfig) -> Optional[ModelInput]:
    """The size and normalisation a pretrained timm model wants (timm's pretrained config of ``model.name``, its
    size overridden by ``model.kwargs.img_size``), which the data pipeline brings the images to; ``None`` for a model
    trained from scratch (the data's own). Grey images are normalised with the mean of its channel statistics."""
    if not _pretrained(config):
        return None
    spec = config.model.name
    try:
        pretrained = timm.models.get_pretrained_cfg(timm_model_name(spec))
    except ValueError as error:
        raise ConfigError(f"model.name: {error}") from None
    if pretrained is None:
        raise ConfigError(f"model.name {spec}: timm has no pretrained weights for it; drop model.kwargs.pretrained")
    size = config.model.kwargs.get("img_size") or pretrained.input_size[-1]
    size = size[-1] if isinstance(size, (tuple, list)) else size
    mean, std = tuple(pretrained.mean), tuple(pretrained.std)
    if input_shape(config.data)[0] == 1:  # grey images into a model of RGB statistics
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    return ModelInput(int(size), mean, std)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; an unknown device or one this machine lacks is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)  # its spelling, as validation checks it
    device = torch.device(name)
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r} asked for but CUDA is not available here; use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
        return device
    backend = getattr(torch, device.type, None) if device.type != "mps" else torch.backends.mps
    if device.type != "meta" and backend is not None and getattr(backend, "is_available", lambda: False)():
        return device
    raise ConfigError(f"device {name!r} is not available here; {DEVICE_HINT}")


def build_model(config: RunConfig, num_classes: int) -> torch.nn.Module:
    """The model of a config through timm's registry: the strategy's model family under the head it needs (its
    registry entry, :func:`~avalanche_lpa.training.strategy_entry`: a fixed head of ``num_classes``, the growing
    head ``model.head``, or none where the model grows its own).

    Raises:
        ConfigError: the model refuses ``model.overrides`` (one line, from the model's ``ValueError``), or the timm
            model of ``model.name`` cannot be built or cannot take the dataset's images.
    """
    entry = strategy_entry(config.strategy.name)
    if config.model.name is not None:  # timm:<name>: any timm model under our head
        return build_timm_model(config, num_classes if entry.head == "fixed" else None)
    overrides = dict(config.model.overrides)
    for key, value in entry.head_keywords(num_classes, config.model.head).items():
        overrides.setdefault(key, value)  # model.overrides may set num_classes; head_type is model.head's
    try:
        model = timm.create_model(model_label(config), **overrides)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model.overrides: {one_line(error)}") from None
    if config.model.compile:
        # In place (nn.Module.compile): state-dict keys, deepcopy (LwF) and checkpoints stay as they are.
        model.backbone.compile()
    return model


def check_model_input(model: torch.nn.Module, shape: Tuple[int, int, int]) -> None:
    """Raises :class:`ConfigError` unless a LocalityViT-family ``model`` takes the dataset's ``shape`` images (found
    here, not at the first batch of a run whose folder is already written)."""
    size = getattr(model, "img_size", None)
    if size is None:
        return
    takes = (getattr(model, "in_chans", shape[0]), *((size, size) if isinstance(size, int) else size))
    if tuple(takes) != tuple(shape):
        raise ConfigError(
            f"model.overrides: the model takes {'x'.join(map(str, takes))} images, the dataset gives "
            f"{'x'.join(map(str, shape))}; set model.overrides.img_size and in_chans to the dataset's"
        )


def parameter_count(model: torch.nn.Module) -> int:
    """The parameters of a network (every tensor it trains or keeps as a parameter, frozen ones included)."""
    return sum(p.numel() for p in model.parameters())


def load_model_file(model: torch.nn.Module, path: Path) -> None:
    """Loads a run's ``model.pt`` into ``model`` with ``torch.load(weights_only=True)``: tensors only, no code.

    Raises:
        ConfigError: the file is not a state dict of this model (garbage bytes, another pickle, other keys or
            shapes); one line naming the file.
    """
    advice = "it is damaged or from another run: run the run again with --overwrite, or restore the file"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bytes that are not a state dict
        raise ConfigError(f"{path} is not a state dict of this run's model ({one_line(error, 120, kind=True)}); "
                          f"{advice}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path} is not a state dict of this run's model (it holds a {type(state).__name__}); "
                          f"{advice}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(f"{path} is not a state dict of this run's model ({one_line(error)}); {advice}") from None


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
                f"({one_line(error, 300, kind=True)}); {fix}"
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
            raise ConfigError(f"model.name {spec}: the locality metric cannot read its attention ({one_line(error, 300, kind=True)})") from None
        idle = [site.name for site, attn in zip(sites, maps) if attn is None]
        if idle:
            raise ConfigError(
                f"model.name {spec}: attention layers {', '.join(idle)} do not run in the forward pass; the "
                "locality metric needs every attention layer to be used"
            )


def build_timm_model(config: RunConfig, num_classes: Optional[int]) -> TimmClassifier:
    """The timm model of a config under its head (``num_classes``: a fixed head, e.g. for iCaRL; else ``None``).

    Raises:
        ConfigError: timm cannot build the model with these keywords, or the model cannot take the dataset's
            images (one line naming the keywords to change).
    """
    spec = config.model.name
    try:
        name = timm_model_name(spec)
    except ValueError as error:
        raise ConfigError(f"model.name: {error}") from None
    kwargs = timm_kwargs(config)
    pretrained = bool(kwargs.pop("pretrained", False))
    try:
        # model.head shapes a growing head; a strategy that needs a fixed one gets a Linear whatever it says
        head = config.model.head if num_classes is None else "incremental"
        model = timm_classifier(name, num_classes=num_classes, head_type=head, pretrained=pretrained, **kwargs)
    except Exception as error:  # timm raises TypeError, ValueError, AssertionError ... for keywords it cannot take
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ConfigError(
            f"model.name {spec}: timm.create_model({name!r}, {shown}) failed ({one_line(error, 300, kind=True)}); fix model.kwargs "
            "(a null value drops a keyword the model does not take)"
        ) from None
    if config.model.lpa_convert:
        try:
            convert_to_lpa(model)
        except ValueError as error:
            raise ConfigError(f"model.lpa_convert with {spec}: {one_line(error)}") from None
    shape = input_shape(config.data)
    wanted = model_input(config)
    check_timm_input(model, shape if wanted is None else (shape[0], wanted.size, wanted.size), spec)
    if config.model.compile:
        model.backbone.compile()  # in place, as for LocalityViT: state-dict keys stay as they are
    return model
