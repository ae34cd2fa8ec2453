"""Kedro nodes, one module per pipeline: pure functions that parse their parameters and call
the library. Each takes datasets and raw parameter dicts (as Kedro passes them) and returns
new data; all file I/O is in the catalog's datasets (``kedro_edge.io``).
"""

from kedro_edge.nodes.compression import (
    distill_student,
    export_model,
    export_teacher,
    prune_teacher,
    quantize_student,
)
from kedro_edge.nodes.deployment import deploy_to_fleet, enforce_fleet, plot_device_latency
from kedro_edge.nodes.training import split_dataset, train_teacher
from kedro_edge.nodes.validation import enforce_gates, evaluate_models, plot_compression, stage_table

__all__ = [
    "deploy_to_fleet",
    "enforce_fleet",
    "plot_device_latency",
    "distill_student",
    "enforce_gates",
    "evaluate_models",
    "export_model",
    "export_teacher",
    "plot_compression",
    "prune_teacher",
    "quantize_student",
    "split_dataset",
    "stage_table",
    "train_teacher",
]
