"""Data: the checks every loader runs, the bundled tasks, splits, batches and calibration samples."""

from kedro_edge.data.splits import (
    PIXEL_SCALE,
    PIXELS,
    SPLITS,
    DataParams,
    Splits,
    batches,
    calibration_samples,
    check_arrays,
    check_features,
    check_images,
    load_digits_arrays,
    split_arrays,
    split_indices,
    standardise,
)

__all__ = [
    "PIXELS",
    "PIXEL_SCALE",
    "SPLITS",
    "DataParams",
    "Splits",
    "batches",
    "calibration_samples",
    "check_arrays",
    "check_features",
    "check_images",
    "load_digits_arrays",
    "split_arrays",
    "split_indices",
    "standardise",
]
