"""Evaluation: the locality metric (mean attention distance) of any registered attention family (our layers, timm
ViT/DeiT/ConViT, user adapters) and class-incremental metrics and summary."""
from .attention_maps import ATTENTION_MAPS_FORMAT, AttentionMapsPluginMetric, find_attention_maps_metric
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
from ..models.attention_adapters import (
    AttentionSite,
    attention_sites,
    patch_attention,
    record_dropout_input,
    register_attention_adapter,
    supported_attention_classes,
)
from .locality import (
    LocalityAtIterations,
    LocalityPluginMetric,
    MeanAttentionDistance,
    attention_layers,
    collect_attention_maps,
    locality_metrics,
    mean_attention_distance,
    measure_locality,
    uniform_attention_distance,
)
from .probe import class_balanced_indices, draw_probe
from .training import EpochLearningRate, LearningRate, training_metrics

__all__ = [
    "EpochLearningRate",
    "LearningRate",
    "training_metrics",
    "ATTENTION_MAPS_FORMAT",
    "AccuracyMatrix",
    "AttentionMapsPluginMetric",
    "AttentionSite",
    "CILSummary",
    "LocalityAtIterations",
    "LocalityPluginMetric",
    "MeanAttentionDistance",
    "MetricName",
    "accuracy_matrix",
    "attention_layers",
    "attention_sites",
    "cil_evaluator",
    "class_balanced_indices",
    "collect_attention_maps",
    "draw_probe",
    "experience_sizes",
    "find_attention_maps_metric",
    "locality_history",
    "locality_metrics",
    "mean_attention_distance",
    "measure_locality",
    "uniform_attention_distance",
    "metric_history",
    "parse_metric_name",
    "patch_attention",
    "record_dropout_input",
    "register_attention_adapter",
    "summarize",
    "summarize_matrix",
    "supported_attention_classes",
]
