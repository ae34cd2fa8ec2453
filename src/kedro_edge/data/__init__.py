"""Data: the checks every loader runs, the bundled tasks, splits, batches and calibration samples."""

from kedro_edge.data.splits import (
    PIXEL_SCALE,
    PIXELS,
    SPLITS,
    TASK,
    DataParams,
    Splits,
    batches,
    calibration_samples,
    check_arrays,
    check_features,
    check_images,
    check_masks,
    load_digits_arrays,
    split_arrays,
    resized_masks,
    split_indices,
    standardise,
)
from kedro_edge.data.task import Task

__all__ = [
    "PIXELS",
    "PIXEL_SCALE",
    "SPLITS",
    "TASK",
    "Task",
    "DataParams",
    "Splits",
    "batches",
    "calibration_samples",
    "check_arrays",
    "check_features",
    "check_images",
    "check_masks",
    "load_digits_arrays",
    "resized_masks",
    "split_arrays",
    "split_indices",
    "standardise",
]
