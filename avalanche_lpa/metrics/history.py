"""Reading Avalanche's metric history: metric names in both benchmark-API formats, grouped by eval point.

Avalanche names an evaluation value ``<Metric>/<phase>_phase/<stream>_stream[/TaskTTT][/ExpEEE][/...]``.
Legacy benchmarks (``nc_benchmark``) carry a task label (``Task000``), the new benchmark API
(``class_incremental_benchmark``, ``benchmark_from_datasets``) does not; both are read here.

``EvaluationPlugin.get_all_metrics()`` maps each name to ``(x positions, values)`` where ``x`` is the
training iteration count when the value was emitted. Values emitted at the same ``x`` belong to the same
evaluation point; evaluating once after each training experience therefore gives one point per step.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "MetricName",
    "eval_points",
    "locality_history",
    "metric_history",
    "parse_metric_name",
    "to_float",
    "values_by_point",
]

History = Mapping[str, Tuple[Sequence[int], Sequence[Any]]]

_NAME = re.compile(
    r"^(?P<metric>[^/]+)/(?P<phase>[^/]+)_phase/(?P<stream>[^/]+)_stream"
    r"(?:/Task(?P<task>\d+))?(?:/Exp(?P<exp>\d+))?(?P<rest>(?:/[^/]+)*)$"
)


@dataclass(frozen=True)
class MetricName:
    """The parts of an Avalanche metric name; ``rest`` holds trailing parts such as ``Layer00/Head03``."""

    metric: str
    phase: str
    stream: str
    task: Optional[int]
    exp: Optional[int]
    rest: Tuple[str, ...]


def parse_metric_name(name: str) -> Optional[MetricName]:
    """Parses ``Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001`` or ``.../test_stream/Exp001``.

    Returns ``None`` for names without phase and stream (e.g. ``EvalStream/Acc_Matrix``).
    """
    match = _NAME.match(name)
    if match is None:
        return None
    task, exp, rest = match["task"], match["exp"], match["rest"]
    return MetricName(
        metric=match["metric"],
        phase=match["phase"],
        stream=match["stream"],
        task=int(task) if task is not None else None,
        exp=int(exp) if exp is not None else None,
        rest=tuple(rest.strip("/").split("/")) if rest else (),
    )


def metric_history(source: Any) -> History:
    """The metric history of a strategy, an ``EvaluationPlugin`` or an already extracted dict.

    Needs the evaluator's ``collect_all=True`` (Avalanche's default).
    """
    if isinstance(source, Mapping):
        return source
    evaluator = getattr(source, "evaluator", source)
    if not hasattr(evaluator, "get_all_metrics"):
        raise TypeError(
            f"cannot read a metric history from {type(source).__name__}; pass a strategy, its evaluator or "
            "evaluator.get_all_metrics()"
        )
    return evaluator.get_all_metrics()


def values_by_point(
    history: History, metric: str, stream: str, phase: str = "eval"
) -> Dict[int, Dict[MetricName, Any]]:
    """``{x: {parsed name: value}}`` for one metric and stream; a later value at the same ``x`` wins."""
    points: Dict[int, Dict[MetricName, Any]] = {}
    for name, (xs, values) in history.items():
        parsed = parse_metric_name(name)
        if parsed is None or (parsed.metric, parsed.phase, parsed.stream) != (metric, phase, stream):
            continue
        for x, value in zip(xs, values):
            points.setdefault(int(x), {})[parsed] = value
    return points


def eval_points(
    points: Mapping[int, Any], selected: Optional[Sequence[int]] = None, what: str = "metric"
) -> List[int]:
    """The evaluation points to use, in order: all of ``points`` or the ``selected`` ones (validated)."""
    if selected is None:
        return sorted(points)
    missing = [x for x in selected if x not in points]
    if missing:
        raise ValueError(f"no {what} values at eval points {missing}; available: {sorted(points)}")
    return list(selected)


def to_float(value: Any) -> float:
    """A metric value as a float (``nan`` for ``None``)."""
    return math.nan if value is None else float(value)


def locality_history(
    source: Any, stream: str = "test", points: Optional[Sequence[int]] = None
) -> Dict[str, Any]:
    """The ``Locality_Stream`` values of a history, per evaluation point (one per experience in the usual loop).

    Args:
        source: a strategy, its ``EvaluationPlugin`` or ``get_all_metrics()``.
        stream: the evaluated stream's name.
        points: the eval points (``x`` positions) to keep; all by default.

    Returns:
        ``{"eval_points": [x], "mean": [step], "layers": [step][layer], "heads": [step][layer][head]}``; the
        per-layer and per-head lists are empty when those values were not emitted.
    """
    by_point = values_by_point(metric_history(source), "Locality_Stream", stream)
    xs = eval_points(by_point, points, what=f"Locality_Stream/eval_phase/{stream}_stream")
    result: Dict[str, Any] = {"eval_points": xs, "mean": [], "layers": [], "heads": []}
    for x in xs:
        mean, layers, heads = math.nan, {}, {}
        for name, value in by_point[x].items():
            if not name.rest:
                mean = to_float(value)
            elif len(name.rest) == 1:
                layers[int(name.rest[0].removeprefix("Layer"))] = to_float(value)
            elif len(name.rest) == 2:
                layer, head = int(name.rest[0].removeprefix("Layer")), int(name.rest[1].removeprefix("Head"))
                heads.setdefault(layer, {})[head] = to_float(value)
        result["mean"].append(mean)
        if layers:
            result["layers"].append([layers[k] for k in sorted(layers)])
        if heads:
            result["heads"].append([[heads[k][h] for h in sorted(heads[k])] for k in sorted(heads)])
    return result
