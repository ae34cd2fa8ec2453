"""TabularDataset: feature vectors and integer labels from .csv or .npz, and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from kedro_edge.errors import DataError
from kedro_edge.io import TabularDataset

HEADER = "alcohol,target,ash,hue"


def _rows(n: int = 12) -> list[str]:
    return [f"{13 + i / 10},{i % 3},{2.0 + i},{-0.5 * i:.2f}" for i in range(n)]


def _csv(tmp_path, lines: list[str], name: str = "wine.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_label_column_and_every_other_numeric_column_as_features(tmp_path):
    path = _csv(tmp_path, [HEADER, *_rows()])
    out = TabularDataset(str(path), label="target").load()
    assert out["features"].shape == (12, 3) and out["features"].dtype == np.float32
    assert out["labels"].dtype == np.int64
    np.testing.assert_array_equal(out["labels"], np.arange(12) % 3)
    np.testing.assert_allclose(out["features"][1], [13.1, 3.0, -0.5], rtol=1e-6)


def test_csv_features_listed_are_used_in_their_order(tmp_path):
    path = _csv(tmp_path, [HEADER, *_rows()])
    out = TabularDataset(str(path), label="target", features=["hue", "alcohol"]).load()
    np.testing.assert_allclose(out["features"][2], [-1.0, 13.2], rtol=1e-6)


def test_npz_with_configurable_keys(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, x=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    out = TabularDataset(str(path), features_key="x", labels_key="y").load()
    assert out["features"].shape == (20, 2) and out["labels"].dtype == np.int64


@pytest.mark.parametrize(
    ("lines", "kwargs", "needles"),
    [
        ([HEADER, *_rows()], {"label": "class"}, ["no column named 'class'"]),
        ([HEADER, *_rows()], {"label": "target", "features": ["ash", "pH"]}, ["no column named 'pH'"]),
        ([HEADER, *_rows(5), "13.5,1,abc,0.2", *_rows(6)], {"label": "target"}, ["row 7", "'ash'", "'abc'"]),
        (
            [HEADER, *_rows(3), "13.5,1,,0.2", *_rows(8)],
            {"label": "target"},
            ["row 5", "'ash'", "not a number"],
        ),
        ([HEADER, *_rows(3), "13.5,1,nan,0.2", *_rows(8)], {"label": "target"}, ["row 5", "'ash'", "finite"]),
        (
            [HEADER, *_rows(3), "13.5,1.5,2,0.2", *_rows(8)],
            {"label": "target"},
            ["row 5", "'target'", "integer"],
        ),
        ([HEADER, *_rows(3), "13.5,1,2", *_rows(8)], {"label": "target"}, ["row 5", "3 fields"]),
        ([HEADER, *_rows(9)], {"label": "target"}, ["only 9 samples", "at least 10"]),
        ([], {"label": "target"}, ["empty file"]),
    ],
)
def test_bad_csv_fails_in_one_line_naming_the_file_and_where(tmp_path, lines, kwargs, needles):
    path = _csv(tmp_path, lines)
    with pytest.raises(DataError) as err:
        TabularDataset(str(path), **kwargs).load()
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"features": np.zeros((20, 3)), "labels": np.arange(20) % 2 + 0.0}, "'labels' must be 1-D integers"),
        ({"features": np.full((20, 3), np.nan), "labels": np.arange(20) % 2}, "NaN"),
        ({"features": np.zeros((20, 3, 3)), "labels": np.arange(20) % 2}, "must be (N, F)"),
        ({"data": np.zeros((20, 3)), "labels": np.arange(20) % 2}, "no array named 'features'"),
    ],
)
def test_bad_npz_fails_in_one_line_naming_the_file(tmp_path, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as err:
        TabularDataset(str(path)).load()
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value)


def test_missing_file_other_suffix_and_saving_are_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        TabularDataset(str(tmp_path / "none.csv")).load()
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="reads .csv or .npz"):
        TabularDataset(str(tmp_path / "t.parquet")).load()
    with pytest.raises(DataError, match="read-only"):
        TabularDataset(str(tmp_path / "t.csv")).save({})
