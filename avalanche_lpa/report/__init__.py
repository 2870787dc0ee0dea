"""What runs leave behind: ``results.json`` (:mod:`~.results`), figures (:mod:`~.figures`, the per-image attention
in :mod:`~.attention`) and the comparison table of several runs (:mod:`~.tables`). Reads results; never runs one."""
from .attention import (
    attention_comparison_figure,
    attention_maps_figure,
    plot_attention_comparison,
    plot_attention_maps,
    read_attention_maps,
)
from .figures import (
    JOINT_SUFFIX,
    accuracy_matrix_figure,
    locality_figure,
    plot_accuracy_curves,
    plot_accuracy_matrix,
    plot_locality,
    plot_runs,
)
from .results import RESULTS_SCHEMA, collect_results, package_versions, read_results, to_jsonable, write_results
from .tables import comparison_table

__all__ = [
    "JOINT_SUFFIX",
    "RESULTS_SCHEMA",
    "accuracy_matrix_figure",
    "attention_comparison_figure",
    "attention_maps_figure",
    "collect_results",
    "comparison_table",
    "locality_figure",
    "package_versions",
    "plot_accuracy_curves",
    "plot_accuracy_matrix",
    "plot_attention_comparison",
    "plot_attention_maps",
    "plot_locality",
    "plot_runs",
    "read_attention_maps",
    "read_results",
    "to_jsonable",
    "write_results",
]
