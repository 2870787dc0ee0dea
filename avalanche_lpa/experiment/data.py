"""The benchmark a config describes, built from the data room (:mod:`avalanche_lpa.data`), and its class map."""
from __future__ import annotations

from typing import Any, Dict, Tuple

from ..data import split_cifar100, split_fashion_mnist, split_imagenet100, synthetic_benchmark
from .config import ConfigError

__all__ = ["build_benchmark", "class_mapping", "input_shape"]


def class_mapping(benchmark) -> Dict[str, Any]:
    """Class order (original ids, arrival order) and the original-id -> label mapping of a benchmark."""
    order = [int(c) for c in benchmark.classes_order_original_ids]
    return {"class_order": order, "label_of_original_class": {str(c): i for i, c in enumerate(order)}}


_NUM_CLASSES = {"cifar100": 100, "fashion_mnist": 10}
# (channels, height, width) of the images each loader yields (ImageNet-100 at the loaders' default 224 px).
_INPUT_SHAPES = {"cifar100": (3, 32, 32), "fashion_mnist": (1, 28, 28), "imagenet100": (3, 224, 224)}


def input_shape(data_config: Dict[str, Any]) -> Tuple[int, int, int]:
    """``(channels, height, width)`` of the images of the benchmark a validated ``data`` section describes."""
    name = data_config["dataset"]
    if name == "synthetic":
        synthetic = data_config["synthetic"]
        return synthetic["in_chans"], synthetic["img_size"], synthetic["img_size"]
    return _INPUT_SHAPES[name]


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
    """The benchmark described by a validated ``data`` config section."""
    name = data_config["dataset"]
    if name in _NUM_CLASSES or name == "synthetic":
        _check_split(name, _NUM_CLASSES.get(name, 2 * data_config["n_experiences"]), data_config)
    root = data_config["root"]  # None: each loader's default_data_root(dataset)
    download = data_config.get("download", True)
    common = dict(
        n_experiences=data_config["n_experiences"],
        class_order=data_config["class_order"],
        seed=seed,
        max_train_per_class=data_config["max_train_per_class"],
        max_test_per_class=data_config["max_test_per_class"],
    )
    if name == "cifar100":
        return split_cifar100(root, augment=data_config["augment"], auto_augment=data_config["auto_augment"],
                              download=download, **common)
    if name == "fashion_mnist":
        return split_fashion_mnist(root, augment=data_config["augment"], download=download, **common)
    if name == "imagenet100":
        return split_imagenet100(root, class_list=data_config["class_list"], augment=data_config["augment"],
                                 auto_augment=data_config["auto_augment"], **common)
    if name == "synthetic":
        n_classes = common["n_experiences"] * 2
        return synthetic_benchmark(
            n_experiences=common["n_experiences"],
            classes_per_experience=2,
            seed=seed,
            fixed_class_order=common["class_order"] or list(range(n_classes)),
            **data_config["synthetic"],
        )
    raise ValueError(f"unknown dataset {name!r}; valid: cifar100, fashion_mnist, imagenet100, synthetic")
