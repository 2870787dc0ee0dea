"""The benchmark a config describes, built by its dataset's loader in the data room's table
(:data:`avalanche_lpa.data.DATASETS`), and its class map."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from ..data import DatasetInfo, dataset_info
from .config import DEFAULTS, ConfigError

__all__ = ["build_benchmark", "class_mapping", "input_shape", "loader_options"]


def class_mapping(benchmark) -> Dict[str, Any]:
    """Class order (original ids, arrival order) and the original-id -> label mapping of a benchmark."""
    order = [int(c) for c in benchmark.classes_order_original_ids]
    return {"class_order": order, "label_of_original_class": {str(c): i for i, c in enumerate(order)}}


def loader_options(info: DatasetInfo, data_config: Dict[str, Any]) -> Dict[str, Any]:
    """The keywords of ``info.loader`` from a validated ``data`` section: the keys ``info.options`` names, a
    section of its own (``data.synthetic``) as its keys."""
    options: Dict[str, Any] = {}
    for key in info.options:
        value = data_config.get(key, DEFAULTS["data"].get(key))  # a section of an older run may lack a newer key
        if isinstance(value, Mapping):
            options.update(value)
        else:
            options[key] = value
    return options


def input_shape(data_config: Dict[str, Any]) -> Tuple[int, int, int]:
    """``(channels, height, width)`` of the images of the benchmark a validated ``data`` section describes: the
    table's, unless the loader is told another size (``data.synthetic``: ``in_chans``, ``img_size``)."""
    info = dataset_info(data_config["dataset"])
    options = loader_options(info, data_config)
    channels, height, width = info.input_shape
    if "img_size" in options:
        height = width = options["img_size"]
    return options.get("in_chans", channels), height, width


def _check_split(name: str, num_classes: int, data_config: Dict[str, Any]) -> None:
    order, steps = data_config["class_order"], data_config["n_experiences"]
    if order is not None and sorted(order) != list(range(num_classes)):
        raise ConfigError(
            f"data.class_order must list each of the {num_classes} {name} class ids 0..{num_classes - 1} once "
            f"(got {len(order)} ids); fix it or set it to null"
        )
    if num_classes % steps:
        raise ConfigError(f"data.n_experiences={steps} does not divide the {num_classes} classes of {name}")


def build_benchmark(data_config: Dict[str, Any], seed: int):
    """The benchmark described by a validated ``data`` config section, built by its dataset's loader."""
    info = dataset_info(data_config["dataset"])
    options = loader_options(info, data_config)
    if "class_list" not in options:  # a class list (ImageNet-100) names the classes: they are counted on loading
        _check_split(info.name, info.classes(data_config["n_experiences"]), data_config)
    return info.loader(n_experiences=data_config["n_experiences"], class_order=data_config["class_order"], seed=seed,
                       **options)
