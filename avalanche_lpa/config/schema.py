"""The run configuration as typed, frozen dataclasses: every key's type and default, declared once.

A config is validated once, where it enters (:func:`~.validation.validate`), into a :class:`RunConfig`; that object
is what flows through the runner, the report and the command line. A plain mapping exists only at the edges: the
YAML file (:meth:`RunConfig.as_dict`), W&B, ``results.json``. :data:`~.validation.DEFAULTS` (the nested mapping a
YAML file mirrors) is built from these classes, and every value is checked against its field's annotation by the
package's one type checker (:func:`avalanche_lpa.training.options.check_type`), so a key whose default is ``null``
(``data.root``, ``data.class_order``, ...) is typed too. The ``strategy`` section is the chosen strategy's
options, resolved once (:class:`~avalanche_lpa.training.StrategyOptions`).

Dataclasses rather than pydantic: no dependency, and the validator gives the one-line errors of the rest of the
package (key, value, fix) for a strategy schema that depends on ``strategy.name``.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from ..data import dataset_info
from ..training.options import StrategyOptions, plain_values

__all__ = [
    "CheckpointConfig", "DataConfig", "EvaluationConfig", "FolderData", "ModelConfig", "OutputConfig", "RunConfig",
    "SyntheticData", "field_types", "schema_defaults",
]

_SYNTHETIC = dataset_info("synthetic").input_shape  # the defaults of data.synthetic: the dataset table's image


@dataclass(frozen=True)
class SyntheticData:
    """Images of the ``synthetic`` dataset (tests, smoke runs)."""

    img_size: int = _SYNTHETIC[-1]
    in_chans: int = _SYNTHETIC[0]
    train_per_class: int = 32
    test_per_class: int = 16
    noise: float = 0.5


@dataclass(frozen=True)
class FolderData:
    """Images of the ``folder`` dataset (``data.root``: ``train/<class>/*``, ``test/<class>/*``); ``null``: from
    the training images, computed once and cached beside them."""

    img_size: Optional[int] = None
    in_chans: int = 3  # 1: grey, 3: RGB
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    test_fraction: Optional[float] = None  # a root of class folders alone: each class's share kept for testing


@dataclass(frozen=True)
class DataConfig:
    """The benchmark: dataset, split into experiences, augmentation, loading."""

    dataset: str = "cifar100"
    root: Optional[str] = None  # None: $AVALANCHE_LPA_DATA, else Avalanche's ~/.avalanche/data/<name>
    download: bool = True  # download a missing CIFAR-100 / Fashion-MNIST into the root (--no-download: false)
    n_experiences: int = 10
    class_order: Optional[List[int]] = None  # original class ids, in the order they arrive
    initial_classes: Optional[int] = None  # classes of the first experience (B50: half); None: equal shares
    class_list: Optional[str] = None  # imagenet100: file with one WordNet id per line
    augment: bool = True  # random crop + flip on training images
    auto_augment: Optional[str] = None  # timm auto-augment policy (the authors: "rand-m9-mstd0.5-inc1")
    max_train_per_class: Optional[int] = None  # subsample for quick runs (None: all images)
    max_test_per_class: Optional[int] = None
    num_workers: int = 0
    sample_order: str = "seeded"  # seeded (the same batches under any number of processes) | avalanche
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    folder: FolderData = field(default_factory=FolderData)


@dataclass(frozen=True)
class ModelConfig:
    """The network: a LocalityViT-family preset (or a timm model) and its head."""

    attn_type: str = "lpa"  # lpa | gpsa | mhsa
    preset: str = "cifar"  # cifar | imagenet | tiny (avalanche_lpa.models.PRESETS)
    head: str = "incremental"  # incremental | per_experience (fixed-head strategies get a fixed Linear)
    overrides: Dict[str, Any] = field(default_factory=dict)  # LocalityViT keywords (timm models: patch_size only)
    name: Optional[str] = None  # a timm model instead: "timm:<name>" (runner/model.py)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # its timm.create_model keywords (timm models only)
    lpa_convert: bool = False  # timm ViTs only: their attention made LPA, keeping the (pretrained) weights
    compile: bool = False  # torch.compile the backbone (GPU runs)


@dataclass(frozen=True)
class EvaluationConfig:
    """What is measured and shown besides accuracy."""

    locality_probe_size: int = 256
    attention_maps: int = 4  # probe images of attention_maps.png; 0: off
    loggers: List[str] = field(default_factory=lambda: ["text"])  # text, tensorboard, csv, wandb
    verbose: bool = False  # console: every metric, not one summary per experience
    progress_bar: bool = True  # labelled progress bars on a terminal


@dataclass(frozen=True)
class OutputConfig:
    """The run folder and what is written into it."""

    dir: str = "runs/{name}"  # {name}, {model}, {strategy} and {seed} are filled in
    checkpoint: bool = True
    save_model: bool = True
    plots: bool = True


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints inside an experience (besides the one after every experience, ``output.checkpoint``)."""

    every_epochs: Optional[int] = field(default=None, metadata={"checked": "config"})  # N-th epoch of a phase
    every_minutes: Optional[float] = field(default=30.0, metadata={"checked": "config"})  # first epoch end after M


@dataclass(frozen=True)
class RunConfig:
    """One run: every section of a config file."""

    name: str = "run"
    seed: int = 1993
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The chosen strategy's options, resolved once; their schema is the strategy registry's (avalanche_lpa.training).
    strategy: StrategyOptions = field(default_factory=lambda: StrategyOptions("lpa"))
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def as_dict(self) -> Dict[str, Any]:
        """The config as the nested mapping a YAML file holds (``config.yaml``, W&B, ``results.json``)."""
        return _as_dict(self)


def _is_section(hint: Any) -> bool:
    """Whether a field is a section of the schema (a dataclass of keys), not a value (the strategy's options)."""
    return dataclasses.is_dataclass(hint) and hint is not StrategyOptions


def schema_defaults(cls: type = RunConfig) -> Dict[str, Any]:
    """The nested mapping of defaults of a schema class (what :data:`~.validation.DEFAULTS` holds; the strategy
    section names the default strategy only: its options are the registry's)."""
    return _as_dict(cls())


def _as_dict(value: Any) -> Any:
    if isinstance(value, StrategyOptions):  # the section a YAML file holds: the name, then the options
        return {"name": value.name, **{key: plain_values(option) for key, option in value.values.items()}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _as_dict(getattr(value, item.name)) for item in dataclasses.fields(value)}
    return plain_values(value)


def _leaves(cls: type, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, field, annotation)`` of every leaf of a schema class (free-form mappings are leaves)."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if _is_section(hint):
            yield from _leaves(hint, f"{prefix}{item.name}.")
        else:
            yield f"{prefix}{item.name}", item, hint


def field_types(cls: type = RunConfig) -> Dict[str, Any]:
    """``{dotted key: annotation}`` of every leaf of the schema (free-form mappings are leaves)."""
    return {key: hint for key, _, hint in _leaves(cls)}


#: Keys whose values the config's own checks refuse with a message of their own (range and type together).
CHECKED_ELSEWHERE = frozenset(key for key, item, _ in _leaves(RunConfig) if item.metadata.get("checked"))


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """The dataclass ``cls`` from a checked nested mapping (its sections built as their own classes)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for item in dataclasses.fields(cls):
        value = values[item.name]
        kwargs[item.name] = build(hints[item.name], value) if _is_section(hints[item.name]) else value
    return cls(**kwargs)
