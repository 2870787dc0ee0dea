"""The benchmark a config describes, built by its dataset's loader in the data room's table
(:data:`avalanche_lpa.data.DATASETS`), and its class map."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from ..config.schema import DataConfig
from ..config.validation import check_split
from ..data import DatasetInfo, ModelInput, dataset_info
from ..data.registry import RESIZING
from ..errors import ConfigError

__all__ = ["build_benchmark", "class_mapping", "input_shape", "loader_options"]


def class_mapping(benchmark: Any) -> Dict[str, Any]:
    """Class order (original ids, arrival order), the original-id -> label mapping of a benchmark and, for an image
    folder, the class names in arrival order."""
    order = [int(c) for c in benchmark.classes_order_original_ids]
    mapping: Dict[str, Any] = {"class_order": order, "label_of_original_class": {str(c): i for i, c in enumerate(order)}}
    names = getattr(benchmark, "class_names", None)  # an image folder's class folders, by original id
    if names is not None:
        mapping["class_names_in_arrival_order"] = [names[c] for c in order]
    return mapping


def loader_options(info: DatasetInfo, data: DataConfig) -> Dict[str, Any]:
    """The keywords of ``info.loader`` from a ``data`` section: the keys ``info.options`` names, a section of its
    own (``data.synthetic``) as its keys."""
    options: Dict[str, Any] = {}
    for key in info.options:
        if key == RESIZING:  # not a config key: the model's, given to build_benchmark
            continue
        value = getattr(data, key)
        if dataclasses.is_dataclass(value):
            options.update(dataclasses.asdict(value))
        else:
            options[key] = value
    return options


def input_shape(data: DataConfig) -> Tuple[int, int, int]:
    """``(channels, height, width)`` of the images of the benchmark a ``data`` section describes: the table's,
    unless the loader is told another size (``data.synthetic``: ``in_chans``, ``img_size``)."""
    info = dataset_info(data.dataset)
    options = loader_options(info, data)
    if info.measure_shape is not None:  # the files decide (an image folder)
        return info.measure_shape(**options)
    channels, height, width = info.input_shape
    if "img_size" in options:
        height = width = options["img_size"]
    return options.get("in_chans", channels), height, width


def build_benchmark(data: DataConfig, seed: int, *, download: bool = True,
                    model_input: Optional[ModelInput] = None) -> Any:
    """The benchmark a ``data`` section describes, built by its dataset's loader.

    Args:
        data: the config's ``data`` section.
        seed: the run's seed (the class order when none is given).
        download: allow the download ``data.download`` asks for (``False`` on the ranks that only read the data).
        model_input: bring the images to a pretrained model's size and statistics
            (:func:`~avalanche_lpa.runner.model.model_input`; ``None``: the dataset's own).
    """
    info = dataset_info(data.dataset)
    check_split(data)
    if not download:
        data = dataclasses.replace(data, download=False)
    options = loader_options(info, data)
    if model_input is not None:
        if RESIZING not in info.options:
            raise ConfigError(f"the {info.title} loader cannot bring its images to a pretrained model's "
                              f"{model_input.size} px; use a dataset of image files or model.kwargs.pretrained: false")
        options[RESIZING] = model_input
    return info.loader(n_experiences=data.n_experiences, class_order=data.class_order, seed=seed, **options)
