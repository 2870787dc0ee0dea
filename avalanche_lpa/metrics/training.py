"""Training curves: the learning rate per epoch, and Avalanche's loss and accuracy per minibatch and epoch.

A long run must be watchable for divergence and overfitting while it trains; Avalanche ships the loss and
accuracy metrics, the learning rate is the one curve it lacks.
"""
from __future__ import annotations

from typing import Any, List, Optional

from avalanche.evaluation import GenericPluginMetric, Metric
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics

__all__ = ["LearningRate", "EpochLearningRate", "training_metrics"]


class LearningRate(Metric[Optional[float]]):
    """The learning rate of an optimizer's first parameter group (the one every recipe group shares)."""

    def __init__(self) -> None:
        self._lr: Optional[float] = None

    def update(self, optimizer: Any) -> None:
        groups = getattr(optimizer, "param_groups", None) or []
        self._lr = float(groups[0]["lr"]) if groups else None

    def result(self) -> Optional[float]:
        return self._lr

    def reset(self) -> None:
        self._lr = None


class EpochLearningRate(GenericPluginMetric[Optional[float], LearningRate]):
    """``LR_Epoch``: the learning rate of the epoch's last iteration, emitted once per training epoch."""

    def __init__(self) -> None:
        super().__init__(LearningRate(), reset_at="epoch", emit_at="epoch", mode="train")

    def update(self, strategy: Any) -> None:
        self._metric.update(strategy.optimizer)

    def __str__(self) -> str:
        return "LR_Epoch"


def training_metrics(minibatch: bool = True, epoch: bool = True, accuracy: bool = True) -> List[Any]:
    """Training loss and accuracy (Avalanche's ``Loss_MB/Epoch``, ``Top1_Acc_MB/Epoch``) and ``LR_Epoch``.

    Args:
        minibatch: the per-minibatch loss and accuracy.
        epoch: the per-epoch loss, accuracy and learning rate.
        accuracy: the training accuracy (off for strategies whose training outputs are not class logits, e.g.
            SCR's projections: ``avalanche_lpa.training.trains_on_logits``).
    """
    metrics: List[Any] = []
    if minibatch or epoch:
        metrics += loss_metrics(minibatch=minibatch, epoch=epoch)
        if accuracy:
            metrics += accuracy_metrics(minibatch=minibatch, epoch=epoch)
    if epoch:
        metrics.append(EpochLearningRate())
    return metrics
