"""Data: the checks every loader runs, the bundled tasks, splits, batches and calibration samples."""

from kedro_edge.data.splits import (
    SPLITS,
    DataParams,
    Splits,
    batches,
    calibration_samples,
    check_arrays,
    check_features,
    load_digits_arrays,
    split_arrays,
    standardise,
)

__all__ = [
    "SPLITS",
    "DataParams",
    "Splits",
    "batches",
    "calibration_samples",
    "check_arrays",
    "check_features",
    "load_digits_arrays",
    "split_arrays",
    "standardise",
]
