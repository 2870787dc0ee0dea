"""iCaRL herding for Avalanche's ``ParametricBuffer``, without the forward hook Avalanche leaves behind."""
from __future__ import annotations

from typing import TYPE_CHECKING, List

import torch
import torch.nn.functional as F
from avalanche.training.storage_policy import HerdingSelectionStrategy, ParametricBuffer
from torch import nn
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from avalanche.benchmarks.utils import AvalancheDataset
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["ScopedHerdingSelection", "herding_buffer", "find_module"]


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``, or the only one whose name ends with ``.name`` (wrapped models)."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    matches = [m for n, m in modules.items() if n.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    top = [n for n in modules if n and "." not in n]
    raise ValueError(f"{type(model).__name__} has no unique submodule {name!r}; top-level modules: {top}")


class ScopedHerdingSelection(HerdingSelectionStrategy):
    """Avalanche's herding order (``make_sorted_indices_from_features``) on features read with a scoped hook.

    Avalanche 0.6.0's ``FeatureBasedExemplarsSelectionStrategy`` wraps the model in
    ``FeatureExtractorBackbone``, which registers a forward hook when the strategy is *constructed* and never
    removes it: every later forward (training, evaluation, LwF's deepcopied teacher) runs it and keeps a
    tensor alive, the closure cannot be pickled by the standard ``pickle`` module, the hooked model is the
    one given at construction (not ``strategy.model`` after a checkpoint reload), features are computed with
    the training augmentations, and the model is left in eval mode. This subclass instead hooks
    ``strategy.model``'s layer only while it computes features, in eval mode on the dataset's eval
    transforms, and restores the model's mode afterwards.

    Args:
        layer_name: name of the submodule whose output are the features ``[B, D]`` (``"backbone"`` for
            :class:`~avalanche_lpa.models.LocalityViT`: the CLS features).
        normalize: L2-normalise features before herding, as iCaRL does.
    """

    def __init__(self, layer_name: str = "backbone", normalize: bool = True) -> None:
        # FeatureBasedExemplarsSelectionStrategy.__init__ is skipped on purpose: it installs the permanent hook.
        self.layer_name = layer_name
        self.normalize = normalize

    @torch.no_grad()
    def features(self, model: nn.Module, data: "AvalancheDataset", batch_size: int, device) -> torch.Tensor:
        """Outputs ``[len(data), D]`` of the feature layer; no hook remains on ``model`` afterwards."""
        outputs: List[torch.Tensor] = []
        handle = find_module(model, self.layer_name).register_forward_hook(
            lambda module, args, output: outputs.append(output.detach())
        )
        was_training = model.training
        model.eval()
        try:
            data = data.eval() if hasattr(data, "eval") else data
            loader = DataLoader(data, batch_size=batch_size, collate_fn=getattr(data, "collate_fn", None))
            for x, *_ in loader:
                model(x.to(device))
        finally:
            handle.remove()
            model.train(was_training)
        if len(data) and not outputs:
            raise ValueError(
                f"layer {self.layer_name!r} was not called by {type(model).__name__}.forward; name the module "
                "whose forward output is the [B, D] feature vector"
            )
        features = torch.cat(outputs)
        if features.ndim != 2:
            raise ValueError(
                f"herding needs [B, D] features but layer {self.layer_name!r} outputs {tuple(features.shape)}"
            )
        return features

    def make_sorted_indices(self, strategy: "SupervisedTemplate", data: "AvalancheDataset") -> List[int]:
        if len(data) == 0:  # a class whose share of the memory shrank to nothing
            return []
        features = self.features(strategy.model, data, strategy.eval_mb_size, strategy.device)
        if self.normalize:
            features = F.normalize(features, dim=1)
        return [int(i) for i in self.make_sorted_indices_from_features(features)]


def herding_buffer(mem_size: int, layer_name: str = "backbone", normalize: bool = True) -> ParametricBuffer:
    """A class-balanced ``ParametricBuffer`` of ``mem_size`` exemplars in total, chosen by herding.

    The memory is split equally over the classes seen so far (some classes get one more when it does not
    divide). When a class's share shrinks, Avalanche re-ranks its stored exemplars by herding with the
    current model and keeps the first ones.
    """
    if mem_size < 1:
        raise ValueError(f"mem_size must be positive, got {mem_size}")
    return ParametricBuffer(
        max_size=mem_size, groupby="class", selection_strategy=ScopedHerdingSelection(layer_name, normalize)
    )
