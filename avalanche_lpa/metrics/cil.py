"""Class-incremental evaluation: an ``EvaluationPlugin`` of Avalanche metrics plus locality, and a summary.

Avalanche already computes accuracy, forgetting, BWT and an accuracy matrix; :func:`cil_evaluator` just
assembles them. What it lacks is added by :func:`summarize`: the accuracy matrix read back from the history
(robust to how ``train`` was called), the accuracy on all classes seen so far after each step, average
incremental accuracy, last accuracy and the max-based forgetting of CIL papers.

Accuracies are fractions in ``[0, 1]``, as Avalanche reports them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

from avalanche.evaluation.metrics import accuracy_metrics, bwt_metrics, forgetting_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training.plugins import EvaluationPlugin

from ..compat.avalanche_metrics import AccuracyMatrix
from .history import eval_points, metric_history, to_float, values_by_point
from .locality import locality_metrics
from .training import training_metrics

__all__ = [
    "AccuracyMatrix",
    "CILSummary",
    "accuracy_matrix",
    "cil_evaluator",
    "experience_sizes",
    "summarize",
    "summarize_matrix",
]


def cil_evaluator(
    loggers: Any = None,
    *,
    locality: bool = True,
    probe_size: int = 256,
    probe_dataset: Any = None,
    probe_seed: int = 0,
    accuracy_matrix_metric: bool = True,
    extra_metrics: Sequence[Any] = (),
    strict_checks: bool = False,
    train_metrics: bool = False,
    train_accuracy: bool = True,
) -> EvaluationPlugin:
    """An ``EvaluationPlugin`` for class-incremental runs.

    Holds Avalanche's experience and stream accuracy, experience and stream forgetting and BWT, the
    ``EvalStream/Acc_Matrix`` metric (:class:`AccuracyMatrix`) and the locality metric (:func:`locality_metrics`).

    Args:
        loggers: Avalanche loggers; ``None`` gives an ``InteractiveLogger`` as Avalanche's default evaluator
            does, ``[]`` logs nothing (the history is still collected).
        locality: add the locality metric (needs attention layers of a registered family: ours, timm's
            ViT/DeiT/ConViT, or one added with ``register_attention_adapter``).
        probe_size: images in the locality probe.
        probe_dataset: where to draw the probe from; ``None`` draws from the evaluated stream.
        probe_seed: seed of the probe draw.
        accuracy_matrix_metric: add Avalanche's accuracy-matrix metric (its rows count calls to ``train``).
        extra_metrics: more plugin metrics to add (e.g. :class:`~.attention_maps.AttentionMapsPluginMetric`).
        strict_checks: passed to ``EvaluationPlugin``.
        train_metrics: add the training curves (:func:`~.training.training_metrics`: loss and accuracy per
            minibatch and epoch, learning rate per epoch).
        train_accuracy: with ``train_metrics``, include the training accuracy (see ``training_metrics``).
    """
    metrics: List[Any] = [
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
    ]
    if accuracy_matrix_metric:
        metrics.append(AccuracyMatrix())
    if locality:
        metrics.append(locality_metrics(probe_size=probe_size, probe_dataset=probe_dataset, seed=probe_seed))
    if train_metrics:
        metrics.extend(training_metrics(accuracy=train_accuracy))
    metrics.extend(extra_metrics)
    if loggers is None:
        loggers = [InteractiveLogger()]
    return EvaluationPlugin(*metrics, loggers=loggers, strict_checks=strict_checks)


def experience_sizes(stream: Any) -> List[int]:
    """Number of samples of every experience of a stream (the weights of the seen-classes accuracy)."""
    return [len(exp.dataset) for exp in stream]


def accuracy_matrix(source: Any, stream: str = "test", points: Optional[Sequence[int]] = None) -> List[List[float]]:
    """The accuracy matrix ``R[i][j]``: accuracy on experience ``j`` at evaluation point ``i``.

    Read from the ``Top1_Acc_Exp`` values of the history (both key formats). With the usual loop, one
    evaluation of the stream after each training experience, point ``i`` is "after training experience
    ``i``". Values emitted at the same training-iteration count form one point; pass ``points`` (the
    ``strategy.clock.train_iterations`` at the end of each experience) to drop extra evaluations, such
    as periodic ones or one before training. Experiences not evaluated at a point are ``nan``.

    Args:
        source: a strategy, its ``EvaluationPlugin`` or ``get_all_metrics()``.
        stream: the evaluated stream's name.
        points: the eval points to keep, in order; all by default.
    """
    by_point = values_by_point(metric_history(source), "Top1_Acc_Exp", stream)
    if not by_point:
        raise ValueError(
            f"no Top1_Acc_Exp/eval_phase/{stream}_stream/... values in the metric history; evaluate the "
            f"'{stream}' stream with accuracy_metrics(experience=True) (cil_evaluator does)"
        )
    xs = eval_points(by_point, points, what=f"Top1_Acc_Exp/eval_phase/{stream}_stream")
    n_exp = 1 + max(name.exp for values in by_point.values() for name in values if name.exp is not None)
    matrix = [[math.nan] * n_exp for _ in xs]
    for row, x in enumerate(xs):
        for name, value in by_point[x].items():
            if name.exp is not None:
                matrix[row][name.exp] = to_float(value)
    return matrix


@dataclass(frozen=True)
class CILSummary:
    """Class-incremental summary of an accuracy matrix (fractions in ``[0, 1]``).

    Attributes:
        accuracy_matrix: ``R[i][j]``, accuracy on experience ``j`` after step ``i`` (``nan`` = not evaluated).
        seen_accuracies: accuracy on all classes seen so far after each step,
            ``sum_{j<=i} n_j R[i][j] / sum_{j<=i} n_j`` with ``n_j`` the test samples of experience ``j``
            (equal weights when the sizes are not given), i.e. accuracy over the pooled seen test samples.
        avg_incremental_accuracy: mean of ``seen_accuracies`` over the steps (the CIL papers' "Avg").
        last_accuracy: ``seen_accuracies[-1]``.
        avg_forgetting_avalanche: Avalanche's ``StreamForgetting``: mean over ``j < T-1`` of
            ``R[j][j] - R[T-1][j]`` (right after learning minus final).
        avg_forgetting_max: the max-based CIL definition (Chaudhry et al. 2018): mean over ``j < T-1`` of
            ``max_{j<=l<T-1} R[l][j] - R[T-1][j]``.
        bwt: backward transfer (Lopez-Paz & Ranzato 2017), mean over ``j < T-1`` of ``R[T-1][j] - R[j][j]``,
            equal to Avalanche's ``StreamBWT`` and to ``-avg_forgetting_avalanche``.
        exp_sizes: the ``n_j`` used, or ``None`` for equal weights.

    The forgetting values and BWT are ``None`` after a single step.
    """

    accuracy_matrix: List[List[float]]
    seen_accuracies: List[float]
    avg_incremental_accuracy: float
    last_accuracy: float
    avg_forgetting_avalanche: Optional[float]
    avg_forgetting_max: Optional[float]
    bwt: Optional[float]
    exp_sizes: Optional[List[int]]

    def as_dict(self) -> Dict[str, Any]:
        """A JSON-friendly dict (``nan`` becomes ``None``)."""
        return _nan_to_none(asdict(self))


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def summarize_matrix(matrix: Sequence[Sequence[float]], exp_sizes: Optional[Sequence[int]] = None) -> CILSummary:
    """Summarizes an accuracy matrix ``R[i][j]`` (step ``i``, experience ``j``, step ``i`` trains experience ``i``).

    Args:
        matrix: ``T`` rows (steps so far) of ``E >= T`` accuracies; entries with ``j > i`` are not used.
        exp_sizes: test samples per experience, the weights of the seen-classes accuracy; equal if ``None``.
    """
    rows = [[to_float(v) for v in row] for row in matrix]
    steps = len(rows)
    if steps == 0 or any(len(row) < steps for row in rows):
        raise ValueError(
            f"need a matrix with T >= 1 rows (steps) of at least T columns (experiences), got {steps} rows of "
            f"lengths {[len(r) for r in rows]}; more evaluation points than experiences usually means extra "
            "evaluations (periodic or before training): select the points after each experience"
        )
    weights = [1.0] * len(rows[0]) if exp_sizes is None else [float(n) for n in exp_sizes]
    if len(weights) < steps:
        raise ValueError(f"need a size for each of the {steps} experiences seen, got {len(weights)}")
    for i, row in enumerate(rows):
        if any(math.isnan(row[j]) for j in range(i + 1)):
            raise ValueError(f"step {i} lacks the accuracy of a seen experience: {row[: i + 1]}")
    seen = [sum(weights[j] * row[j] for j in range(i + 1)) / sum(weights[: i + 1]) for i, row in enumerate(rows)]
    final, old = rows[-1], range(steps - 1)
    forgetting = [rows[j][j] - final[j] for j in old]
    forgetting_max = [max(rows[l][j] for l in range(j, steps - 1)) - final[j] for j in old]
    return CILSummary(
        accuracy_matrix=rows,
        seen_accuracies=seen,
        avg_incremental_accuracy=_mean(seen),
        last_accuracy=seen[-1],
        avg_forgetting_avalanche=_mean(forgetting) if forgetting else None,
        avg_forgetting_max=_mean(forgetting_max) if forgetting_max else None,
        bwt=-_mean(forgetting) if forgetting else None,
        exp_sizes=None if exp_sizes is None else [int(n) for n in exp_sizes],
    )


def summarize(
    source: Any,
    *,
    stream: str = "test",
    exp_sizes: Optional[Sequence[int]] = None,
    points: Optional[Sequence[int]] = None,
) -> CILSummary:
    """Summary of a run from its metric history; see :func:`accuracy_matrix` and :class:`CILSummary`.

    Args:
        source: a strategy, its ``EvaluationPlugin`` or ``evaluator.get_all_metrics()``.
        stream: the evaluated stream's name.
        exp_sizes: test samples per experience (e.g. ``experience_sizes(benchmark.test_stream)``); equal
            weights if ``None``, which is exact for class-balanced splits such as Split CIFAR-100.
        points: the eval points (one per training experience) to use; all by default.
    """
    return summarize_matrix(accuracy_matrix(source, stream, points), exp_sizes)
