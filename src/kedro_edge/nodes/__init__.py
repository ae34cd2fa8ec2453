"""Kedro nodes, one module per pipeline: pure functions that parse their parameters and call
the library. Each takes datasets and raw parameter dicts (as Kedro passes them) and returns
new data; all file I/O is in the catalog's datasets (``kedro_edge.io``).
"""

from kedro_edge.nodes.compression import apply_technique, export_model, export_teacher, technique_node
from kedro_edge.nodes.deployment import (
    enforce_release,
    plot_device_latency,
    release_markdown,
    release_to_fleet,
)
from kedro_edge.nodes.search import plan_compression, run_search, search_compression
from kedro_edge.nodes.training import check_sample_size, split_dataset, train_teacher
from kedro_edge.nodes.validation import (
    enforce_gates,
    evaluate_models,
    plot_compression,
    plot_robustness_curve,
    stage_table,
)

__all__ = [
    "enforce_release",
    "plot_device_latency",
    "release_markdown",
    "release_to_fleet",
    "run_search",
    "search_compression",
    "enforce_gates",
    "evaluate_models",
    "apply_technique",
    "check_sample_size",
    "export_model",
    "export_teacher",
    "plan_compression",
    "plot_compression",
    "plot_robustness_curve",
    "split_dataset",
    "stage_table",
    "technique_node",
    "train_teacher",
]
