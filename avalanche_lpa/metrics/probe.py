"""The fixed probe set of the locality metric: K images drawn once, class-balanced, with a fixed seed.

The same images are measured after every experience, so the locality curves compare the model with
itself rather than with a different sample of images.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Hashable, List, Sequence, Tuple

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from torch.utils.data import Dataset

__all__ = ["class_balanced_indices", "draw_probe", "full_stream"]


def class_balanced_indices(labels: Sequence[Hashable], size: int, seed: int = 0) -> List[int]:
    """Picks ``size`` indices spread as evenly as possible over the classes in ``labels``.

    Each class gives ``size // C`` indices (fewer if it has fewer samples; the shortfall goes to the other
    classes) and ``size % C`` randomly chosen classes give one more. Deterministic for a given seed.

    Args:
        labels: the class of every sample.
        size: how many indices to pick; all of them if there are fewer samples.
        seed: seed of the sample and class shuffles.

    Returns:
        Sorted sample indices.
    """
    generator = torch.Generator().manual_seed(seed)
    by_class = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    classes = sorted(by_class, key=repr)  # repr: labels may be ints or strings; order must not depend on hashing
    shuffled = [[by_class[c][k] for k in torch.randperm(len(by_class[c]), generator=generator)] for c in classes]
    # A random class order decides which classes get the remainder size % C.
    order = torch.randperm(len(classes), generator=generator).tolist()
    picked: List[int] = []
    longest = max((len(s) for s in shuffled), default=0)
    for rank in range(longest):  # round robin: the rank-th sample of every class, then the next rank
        for c in order:
            if len(picked) == size:
                return sorted(picked)
            if rank < len(shuffled[c]):
                picked.append(shuffled[c][rank])
    return sorted(picked)


def full_stream(stream: Any) -> Any:
    """The whole stream a (possibly sliced) stream comes from.

    New-API experiences already point at the whole stream; legacy slices (``test_stream[:2]``) do not, but
    their benchmark keeps the whole stream under the same name.
    """
    if getattr(stream, "slice_ids", None) is not None:
        streams = getattr(getattr(stream, "benchmark", None), "streams", None)
        if isinstance(streams, dict) and stream.name in streams:
            return streams[stream.name]
    return stream


def _datasets(source: Any) -> List[Any]:
    """The datasets behind a dataset, an experience or a stream (any iterable of experiences)."""
    if isinstance(source, (AvalancheDataset, Dataset)):
        return [source]
    if hasattr(source, "dataset"):
        return [source.dataset]
    datasets = [exp.dataset for exp in source]
    if not datasets:
        raise ValueError("cannot draw a locality probe from an empty stream")
    return datasets


def _labels(dataset: Any) -> List[Hashable] | None:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return None
    return [int(t) if isinstance(t, (int, torch.Tensor)) else t for t in targets]


def draw_probe(source: Any, size: int = 256, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor | None]:
    """Draws the probe images from a dataset, an experience or a whole stream.

    Samples are class-balanced over the union of all datasets when they expose ``targets`` (Avalanche
    datasets do), else drawn uniformly at random. Avalanche datasets are read with their eval transforms.

    Args:
        source: an (Avalanche or torch) dataset, an experience, or a stream of experiences.
        size: number of images ``K``.
        seed: seed of the draw.

    Returns:
        ``(images [K, C, H, W] on the CPU, labels [K] or None)``.
    """
    if size <= 0:
        raise ValueError(f"probe size must be positive, got {size}")
    datasets = [d.eval() if isinstance(d, AvalancheDataset) else d for d in _datasets(source)]
    where = [(d, i) for d, dataset in enumerate(datasets) for i in range(len(dataset))]
    per_dataset = [_labels(d) for d in datasets]
    if all(labels is not None for labels in per_dataset):
        labels = [y for labels in per_dataset for y in labels]
        chosen = class_balanced_indices(labels, size, seed)
    else:
        labels = None
        generator = torch.Generator().manual_seed(seed)
        chosen = sorted(torch.randperm(len(where), generator=generator)[:size].tolist())
    images = []
    for k in chosen:
        d, i = where[k]
        image = datasets[d][i][0]
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"probe samples must be image tensors, got {type(image).__name__}; give the dataset an eval "
                "transform that ends in ToTensor()"
            )
        images.append(image)
    probe_labels = None
    if labels is not None and all(isinstance(labels[k], int) for k in chosen):
        probe_labels = torch.tensor([labels[k] for k in chosen])
    return torch.stack(images).cpu(), probe_labels
