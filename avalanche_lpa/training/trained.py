"""How the trained network comes back from a strategy: the registry's ``trained_model`` of each name.

Strategies that take our model apart train its parts inside modules of their own (iCaRL's ``TrainEvalModel``,
FeatureReplay's ``FeatureExtractorModel``, SCR's ``SCRModel``, StreamingLDA's bare backbone) or change its head
(CoPE). Each function here puts those parts back into a network of the class we built (``backbone`` and
``classifier``: :class:`~avalanche_lpa.models.BackboneWithHead`), whose state dict loads into a freshly built
model. After a resume the strategy holds unpickled copies of the parts, so they are always read from the strategy.

The network returned shares its parameters with the strategy; neither the strategy's modules nor ``model`` are
changed, so the strategy goes on training and evaluating as before. Nearest-mean and LDA classifiers (iCaRL's
evaluation, SCR, StreamingLDA) live in the strategy, not in the network.
"""
from __future__ import annotations

import copy
from typing import Any

from avalanche.training.plugins.cope import L2Normalization
from torch import nn

__all__ = ["cope_model", "feature_replay_model", "icarl_model", "own_model", "scr_model", "slda_model"]


def _swapped(network: nn.Module, **parts: nn.Module) -> nn.Module:
    """A shallow copy of ``network`` with other submodules ``parts`` (``network`` itself is left as it is)."""
    copied = copy.copy(network)
    copied._modules = dict(network._modules)  # a table of its own: assigning below must not reach ``network``
    for name, part in parts.items():
        setattr(copied, name, part)
    return copied


def own_model(strategy: Any, model: nn.Module) -> nn.Module:
    """The strategy trains our model as it is: ``strategy.model``."""
    return strategy.model


def icarl_model(strategy: Any, model: nn.Module) -> nn.Module:
    """iCaRL trains ``TrainEvalModel(feature_extractor=our backbone, train_classifier=our fixed head, ...)``."""
    trained = strategy.model
    return _swapped(model, backbone=trained.feature_extractor, classifier=trained.train_classifier)


def feature_replay_model(strategy: Any, model: nn.Module) -> nn.Module:
    """FeatureReplay trains ``FeatureExtractorModel(our model with an Identity head, our head)``."""
    trained = strategy.model
    return _swapped(trained.feature_extractor, classifier=trained.train_classifier)


def scr_model(strategy: Any, model: nn.Module) -> nn.Module:
    """SCR trains ``SCRModel(our backbone, a projection)``; the projection is no head, so ours stays."""
    return _swapped(model, backbone=strategy.model.feature_extractor)


def slda_model(strategy: Any, model: nn.Module) -> nn.Module:
    """StreamingLDA holds our backbone alone (frozen; it fits class means on its features)."""
    return _swapped(model, backbone=strategy.model)


def cope_model(strategy: Any, model: nn.Module) -> nn.Module:
    """CoPE trains our model with its head wrapped as ``Sequential(head, L2Normalization())``: the head alone."""
    trained = strategy.model
    head = trained.classifier
    if isinstance(head, nn.Sequential) and isinstance(head[-1], L2Normalization):  # wrapped at its first training
        return _swapped(trained, classifier=head[0])
    return trained
