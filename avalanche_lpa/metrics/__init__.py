"""Evaluation: the locality metric (mean attention distance) and class-incremental metrics and summary."""
from .cil import (
    AccuracyMatrix,
    CILSummary,
    accuracy_matrix,
    cil_evaluator,
    experience_sizes,
    summarize,
    summarize_matrix,
)
from .history import MetricName, locality_history, metric_history, parse_metric_name
from ..layers import attention_layers
from .locality import (
    LocalityAtIterations,
    LocalityPluginMetric,
    MeanAttentionDistance,
    locality_metrics,
    mean_attention_distance,
    measure_locality,
)
from .probe import class_balanced_indices, draw_probe

__all__ = [
    "AccuracyMatrix",
    "CILSummary",
    "LocalityAtIterations",
    "LocalityPluginMetric",
    "MeanAttentionDistance",
    "MetricName",
    "accuracy_matrix",
    "attention_layers",
    "cil_evaluator",
    "class_balanced_indices",
    "draw_probe",
    "experience_sizes",
    "locality_history",
    "locality_metrics",
    "mean_attention_distance",
    "measure_locality",
    "metric_history",
    "parse_metric_name",
    "summarize",
    "summarize_matrix",
]
