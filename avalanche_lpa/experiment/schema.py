"""The run configuration as typed dataclasses: every key's type and default, declared once.

:data:`~.config.DEFAULTS` (the nested mapping a YAML file mirrors) is built from :class:`RunConfig`, and
:func:`check_value` checks a value against a field's annotation, so a key whose default is ``null``
(``data.root``, ``data.class_order``, ...) is typed too. The ``strategy`` section is the chosen strategy's
options: its schema is the strategy registry's (:func:`avalanche_lpa.training.strategy_options`, with the plugin
sections of :mod:`avalanche_lpa.training.sections`), checked there. :func:`typed` turns a validated config into
these objects, for code that wants attributes (``typed(config).data.n_experiences``).

Dataclasses rather than pydantic: no dependency, and the validator must give the one-line errors of the rest of
the package (key, value, fix) and a strategy schema that depends on ``strategy.name``.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from ..data import dataset_info
from ..training.options import OptionTypeError, check_option, type_name

__all__ = [
    "CheckpointConfig", "DataConfig", "EvaluationConfig", "ModelConfig", "OutputConfig", "RunConfig",
    "SyntheticData", "check_value", "field_types", "schema_defaults", "typed",
]

_SYNTHETIC = dataset_info("synthetic").input_shape  # the defaults of data.synthetic: the dataset table's image


@dataclass
class SyntheticData:
    """Images of the ``synthetic`` dataset (tests, smoke runs)."""

    img_size: int = _SYNTHETIC[-1]
    in_chans: int = _SYNTHETIC[0]
    train_per_class: int = 32
    test_per_class: int = 16
    noise: float = 0.5


@dataclass
class DataConfig:
    """The benchmark: dataset, split into experiences, augmentation, loading."""

    dataset: str = "cifar100"
    root: Optional[str] = None  # None: $AVALANCHE_LPA_DATA, else Avalanche's ~/.avalanche/data/<name>
    download: bool = True  # download a missing CIFAR-100 / Fashion-MNIST into the root (--no-download: false)
    n_experiences: int = 10
    class_order: Optional[List[int]] = None  # original class ids, in the order they arrive
    class_list: Optional[str] = None  # imagenet100: file with one WordNet id per line
    augment: bool = True  # random crop + flip on training images
    auto_augment: Optional[str] = None  # timm auto-augment policy (the authors: "rand-m9-mstd0.5-inc1")
    max_train_per_class: Optional[int] = None  # subsample for quick runs (None: all images)
    max_test_per_class: Optional[int] = None
    num_workers: int = 0
    synthetic: SyntheticData = field(default_factory=SyntheticData)


@dataclass
class ModelConfig:
    """The network: a LocalityViT-family preset (or a timm model) and its head."""

    attn_type: str = "lpa"  # lpa | gpsa | mhsa
    preset: str = "cifar"  # cifar | imagenet | tiny (avalanche_lpa.models.PRESETS)
    head: str = "incremental"  # incremental | per_experience (fixed-head strategies get a fixed Linear)
    overrides: Dict[str, Any] = field(default_factory=dict)  # LocalityViT keywords (timm models: patch_size only)
    name: Optional[str] = None  # a timm model instead: "timm:<name>" (experiment/timm_model.py)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # its timm.create_model keywords (timm models only)
    compile: bool = False  # torch.compile the backbone (GPU runs)


@dataclass
class EvaluationConfig:
    """What is measured and shown besides accuracy."""

    locality_probe_size: int = 256
    attention_maps: int = 4  # probe images of attention_maps.png; 0: off
    loggers: List[str] = field(default_factory=lambda: ["text"])  # text, tensorboard, csv, wandb
    verbose: bool = False  # console: every metric, not one summary per experience
    progress_bar: bool = True


@dataclass
class OutputConfig:
    """The run folder and what is written into it."""

    dir: str = "runs/{name}"  # {name}, {model}, {strategy} and {seed} are filled in
    checkpoint: bool = True
    save_model: bool = True
    plots: bool = True


@dataclass
class CheckpointConfig:
    """Checkpoints inside an experience (besides the one after every experience, ``output.checkpoint``)."""

    every_epochs: Optional[int] = field(default=None, metadata={"checked": "config"})  # N-th epoch of a phase
    every_minutes: Optional[float] = field(default=30.0, metadata={"checked": "config"})  # first epoch end after M


@dataclass
class RunConfig:
    """One run: every section of a config file."""

    name: str = "run"
    seed: int = 1993
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The chosen strategy's options; their schema is the strategy registry's (avalanche_lpa.training).
    strategy: Dict[str, Any] = field(default_factory=lambda: {"name": "lpa"})
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


def schema_defaults(cls: type = RunConfig) -> Dict[str, Any]:
    """The nested mapping of defaults of a schema class (what :data:`~.config.DEFAULTS` holds)."""
    return dataclasses.asdict(cls())


def _leaves(cls: type, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, field, annotation)`` of every leaf of a schema class (free-form mappings are leaves)."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{prefix}{item.name}.")
        else:
            yield f"{prefix}{item.name}", item, hint


def field_types(cls: type = RunConfig) -> Dict[str, Any]:
    """``{dotted key: annotation}`` of every leaf of the schema (free-form mappings are leaves)."""
    return {key: hint for key, _, hint in _leaves(cls)}


#: Keys whose values the config's own checks refuse with a message of their own (range and type together).
CHECKED_ELSEWHERE = frozenset(key for key, item, _ in _leaves(RunConfig) if item.metadata.get("checked"))
_SAMPLES = {bool: True, int: 1, float: 1.0, str: ""}


def check_value(key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (``int``, ``Optional[str]``, ``List[int]``, ...).

    Numbers are taken in any spelling (``2e3`` for an int, ``1`` for a float), as strategy options are.

    Raises:
        OptionTypeError: one line naming the key, the value and the type expected.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return check_value(key, value, hint)
    if hint is Any:
        return value
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise OptionTypeError(f"{key}: expected a list, got {value!r} ({type_name(value)})")
        (item,) = args or (Any,)
        return [check_value(f"{key}[{index}]", element, item) for index, element in enumerate(value)]
    if origin in (dict, Dict, Mapping):
        if value is None:  # `kwargs:` with nothing after it, in YAML: none
            return {}
        if not isinstance(value, Mapping):
            raise OptionTypeError(f"{key}: expected a mapping, got {value!r} ({type_name(value)})")
        return dict(value)
    if value is None:
        raise OptionTypeError(f"{key}: expected {type_name(hint)}, got null")
    return check_option(key, value, _SAMPLES[hint])


def _build(cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for item in dataclasses.fields(cls):
        value = values[item.name]
        kwargs[item.name] = _build(hints[item.name], value) if dataclasses.is_dataclass(hints[item.name]) else value
    return cls(**kwargs)


def typed(config: Mapping[str, Any]) -> RunConfig:
    """A validated config (:func:`~.config.validate`'s result) as :class:`RunConfig` (``strategy`` stays a mapping
    of the strategy's options)."""
    return _build(RunConfig, config)
