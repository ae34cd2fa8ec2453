"""Kedro nodes, one module per pipeline: pure functions that parse their parameters and call
the library. Each takes datasets and raw parameter dicts (as Kedro passes them) and returns
new data; all file I/O is in the catalog's datasets (``kedro_edge.io``).
"""

from kedro_edge.nodes.compression import (
    cluster_student,
    distill_student,
    export_model,
    export_teacher,
    factorise_teacher,
    prune_teacher,
    quantize_student,
)
from kedro_edge.nodes.deployment import (
    enforce_release,
    plot_device_latency,
    release_markdown,
    release_to_fleet,
)
from kedro_edge.nodes.search import plan_compression, run_search, search_compression
from kedro_edge.nodes.training import split_dataset, train_teacher
from kedro_edge.nodes.validation import enforce_gates, evaluate_models, plot_compression, stage_table

__all__ = [
    "enforce_release",
    "plot_device_latency",
    "release_markdown",
    "release_to_fleet",
    "run_search",
    "search_compression",
    "cluster_student",
    "distill_student",
    "enforce_gates",
    "evaluate_models",
    "export_model",
    "export_teacher",
    "factorise_teacher",
    "plan_compression",
    "plot_compression",
    "prune_teacher",
    "quantize_student",
    "split_dataset",
    "stage_table",
    "train_teacher",
]
