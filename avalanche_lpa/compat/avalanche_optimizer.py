"""Avalanche and optimizer param groups: several groups on 0.6 only, and the groups of grown parameters (0.6)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import avalanche
from avalanche.core import SupervisedPlugin
from packaging.version import Version

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["WeightDecayGroupsPlugin", "multiple_param_groups_supported"]


class WeightDecayGroupsPlugin(SupervisedPlugin, supports_distributed=True):
    """Adds the parameters a model grows to the decay or the no-decay param group, as timm would have.

    avalanche-lib 0.6's ``make_optimizer`` puts a new parameter into the param group of its nearest module
    ancestor and raises ``No unique group found for this node`` when that ancestor already holds parameters of
    both groups (a new ``LayerNorm + Linear`` head under a classifier, with timm's no-decay group for 1-D
    parameters). This plugin adapts the model one step earlier (``after_train_dataset_adaptation``; model
    adaptation is idempotent, Avalanche's own call then changes nothing) and appends every parameter with a
    new name to the no-decay group if it is 1-D or listed in ``no_weight_decay``, else to the decay group.
    Avalanche then finds them in the optimizer and leaves them there. It does nothing for optimizers that
    do not have exactly one group with and one without weight decay.

    Args:
        no_weight_decay: parameter names that never decay (``model.no_weight_decay()``).
    """

    def __init__(self, no_weight_decay: Iterable[str] = ()) -> None:
        super().__init__()
        self.no_weight_decay = set(no_weight_decay)

    def after_train_dataset_adaptation(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        groups = strategy.optimizer.param_groups
        decay = [g for g in groups if g.get("weight_decay", 0.0) > 0.0]
        no_decay = [g for g in groups if not g.get("weight_decay", 0.0) > 0.0]
        if len(decay) != 1 or len(no_decay) != 1:
            return
        strategy.model = strategy.model_adaptation()
        present = {id(p) for group in groups for p in group["params"]}
        # A grown parameter under a known name (IncrementalClassifier's new Linear) is swapped in by Avalanche.
        known = set(getattr(strategy, "optimized_param_id", None) or ())
        for name, param in strategy.model.named_parameters():
            if id(param) in present or name in known:
                continue
            target = no_decay[0] if param.ndim <= 1 or name in self.no_weight_decay else decay[0]
            target["params"].append(param)


def multiple_param_groups_supported() -> bool:
    """Whether the installed Avalanche accepts optimizers with several param groups.

    Avalanche 0.5's ``make_optimizer`` calls ``reset_optimizer``, which raises on more than one group;
    0.6 switched to ``update_optimizer``, which keeps groups.
    """
    return Version(avalanche.__version__) >= Version("0.6.0")
