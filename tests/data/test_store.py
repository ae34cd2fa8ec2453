"""The pixel store: splits as index lists over memory-mapped pixels, read a batch at a time."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from kedro_edge.data import Splits
from kedro_edge.data.preprocessing import Preprocessing
from kedro_edge.data.store import StoredImages
from kedro_edge.errors import DataError
from kedro_edge.evaluation.robustness import RobustnessParams, perturbed_copy
from kedro_edge.io import ImageFolderDataset, ModelInputDataset
from kedro_edge.models.training import predict
from kedro_edge.nodes import split_dataset
from kedro_edge.runtimes.onnx_export import to_onnx
from kedro_edge.runtimes.onnxruntime import ort_predict, session

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, size=(600, 3, 12, 12), dtype=np.uint8)
LABELS = np.arange(600) % 3
PARAMS = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.3, "image_size": None}
CONTRACT = Preprocessing(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], scale=1 / 255)


def _saved(tmp_path, params=PARAMS) -> tuple[dict, ModelInputDataset]:
    dataset = ModelInputDataset(str(tmp_path / "splits.npz"))
    dataset.save(split_dataset({"images": PIXELS, "labels": LABELS}, params))
    return dataset.load(), dataset


def _in_memory(splits: Splits) -> Splits:
    return splits.subset({s: np.arange(len(splits.y(s))) for s in ("train", "val", "test")})


def test_the_splits_are_index_lists_over_a_memory_mapped_uint8_store(tmp_path):
    loaded, _ = _saved(tmp_path)
    assert isinstance(loaded["pixels"], np.memmap) and loaded["pixels"].dtype == np.uint8
    with np.load(tmp_path / "splits.npz") as npz:  # no image array inside splits.npz
        assert not any(npz[k].ndim == 4 for k in npz.files)
        rows = np.concatenate([npz["index_train"], npz["index_val"], npz["index_test"]])
    assert sorted(rows.tolist()) == list(range(600))  # every image in exactly one split
    view = Splits(loaded).x("test")
    assert isinstance(view, StoredImages) and view.shape == (180, 3, 12, 12)
    pick = np.array([7, 0, 3, 3, 150])  # out of order, repeated: rows come back in the order asked
    expected = PIXELS[loaded["index_test"][pick]].astype(np.float32) / 255
    np.testing.assert_allclose(view[pick], expected, rtol=0, atol=1e-6)


def test_the_contract_is_applied_as_batches_are_read(tmp_path):
    loaded, _ = _saved(tmp_path, {**PARAMS, "preprocessing": CONTRACT.model_dump()})
    x = Splits(loaded).x("val")[:5]
    raw = PIXELS[loaded["index_val"][:5]].astype(np.float32)
    mean, std = np.array(CONTRACT.mean).reshape(1, 3, 1, 1), np.array(CONTRACT.std).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(x, (raw / 255 - mean) / std, atol=1e-5)


def test_streamed_and_in_memory_give_identical_predictions(tmp_path):
    loaded, _ = _saved(tmp_path, {**PARAMS, "preprocessing": CONTRACT.model_dump()})
    streamed = Splits(loaded)
    memory = _in_memory(streamed)
    assert not memory.streamed and streamed.streamed
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(400, 3)).eval()
    np.testing.assert_array_equal(predict(model, streamed.x("test")), predict(model, memory.x("test")))
    sess = session(to_onnx(model, streamed.input_shape))
    np.testing.assert_array_equal(ort_predict(sess, streamed.x("test"), 64), ort_predict(sess, memory.x("test"), 64))
    rob = RobustnessParams()  # the perturbed copy: the same draw, lazily or in memory
    lazy = perturbed_copy(streamed.x("test"), rob, streamed.preprocessing, severity=2.0)
    eager = perturbed_copy(memory.x("test"), rob, memory.preprocessing, severity=2.0)
    assert isinstance(lazy, StoredImages) and isinstance(eager, np.ndarray)
    np.testing.assert_array_equal(ort_predict(sess, lazy, 50), ort_predict(sess, eager, 64))
    assert not np.array_equal(eager, memory.x("test"))  # it did perturb


def test_a_store_from_another_split_is_refused(tmp_path):
    _, dataset = _saved(tmp_path)
    other = ModelInputDataset(str(tmp_path / "other.npz"), images_filepath=str(tmp_path / "images.npy"))
    other.save(split_dataset({"images": PIXELS[::-1].copy(), "labels": LABELS}, PARAMS))  # overwrites images.npy
    with pytest.raises(DataError, match=r"images.npy: does not belong to .*splits.npz"):
        dataset.load()


def _folder(root, n_per_class=6, size=(20, 30)):
    from PIL import Image

    for label, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = np.full((*size, 3), 40 * label + i, np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_a_folder_decodes_in_parallel_into_a_store_reused_until_the_folder_changes(tmp_path):
    _folder(tmp_path / "imgs")
    store = tmp_path / "store" / "imgs.npy"
    dataset = ImageFolderDataset(str(tmp_path / "imgs"), size=16, mode="RGB", store=str(store), workers=2)
    first = dataset.load()
    assert isinstance(first["images"], np.memmap) and first["images"].shape == (12, 3, 16, 16)
    assert list(first["labels"]) == [0] * 6 + [1] * 6 and int(first["images"][7, 0, 0, 0]) in (40, 41, 42)
    stamp = store.stat().st_mtime_ns
    dataset.load()
    assert store.stat().st_mtime_ns == stamp  # the same listing: not decoded again
    _folder(tmp_path / "imgs2")
    (tmp_path / "imgs" / "cat" / "extra.png").write_bytes((tmp_path / "imgs2" / "cat" / "1.png").read_bytes())
    assert dataset.load()["images"].shape[0] == 13  # a new file: decoded again


def test_unreadable_files_are_counted_named_and_stop_the_run_past_the_threshold(tmp_path, caplog):
    _folder(tmp_path / "imgs")
    for i in range(3):
        (tmp_path / "imgs" / "dog" / f"broken{i}.png").write_bytes(b"not a png")
    strict = ImageFolderDataset(str(tmp_path / "imgs"), size=8, store=str(tmp_path / "a.npy"))
    with pytest.raises(DataError, match=r"3 of 15 files unreadable: .*broken0.png: not a readable image"):
        strict.load()
    assert not (tmp_path / "a.npy").exists()  # nothing half-written left as the store
    tolerant = ImageFolderDataset(str(tmp_path / "imgs"), size=8, store=str(tmp_path / "b.npy"), max_bad_fraction=0.25)
    with caplog.at_level(logging.WARNING):
        data = tolerant.load()
    assert data["images"].shape == (12, 1, 8, 8) and list(data["labels"]) == [0] * 6 + [1] * 6
    assert "3 of 15 files unreadable" in caplog.text and "broken2.png" in caplog.text


STREAMED_RUN = """
import json, sys
import numpy as np, torch
from torch import nn
from kedro_edge.compress.ptq import quantize_int8
from kedro_edge.compress.quantize import QuantizeParams
from kedro_edge.data import Splits, calibration_samples
from kedro_edge.io import ModelInputDataset
from kedro_edge.models.training import fit
from kedro_edge.runtimes.onnx_export import to_onnx
from kedro_edge.runtimes.onnxruntime import ort_predict, session
from kedro_edge.testing.memory import PeakAnon

torch.set_num_threads(2)
splits = Splits(ModelInputDataset(sys.argv[1]).load())
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
with PeakAnon() as peak:
    fit(model, splits, epochs=1, batch_size=32, lr=2e-2, description="train")
    fp32 = to_onnx(model, splits.input_shape)
    int8 = quantize_int8(fp32, calibration_samples(splits, 256), QuantizeParams())
    test_accuracy = float((ort_predict(session(int8), splits.x("test")).argmax(1) == splits.y("test")).mean())
print(json.dumps({"growth": peak.growth, "accuracy": test_accuracy}))
"""


def test_a_data_set_larger_than_the_memory_bound_trains_calibrates_and_evaluates(tmp_path):
    """6,000 RGB 96x96 images: 166 MB as uint8, 663 MB as the float copy every stage used to hold;
    the run's anonymous memory may grow by 200 MB at most."""
    n = 6000
    labels = np.arange(n) % 4
    pixels = np.lib.format.open_memmap(tmp_path / "raw.npy", mode="w+", dtype=np.uint8, shape=(n, 3, 96, 96))
    for s in range(0, n, 1000):  # the class shows as the image's brightness, under noise
        noise = np.random.default_rng(s).integers(0, 120, size=(1000, 3, 96, 96), dtype=np.uint8)
        pixels[s : s + 1000] = noise + (labels[s : s + 1000] * 40).astype(np.uint8)[:, None, None, None]
    pixels.flush()
    raw = np.load(tmp_path / "raw.npy", mmap_mode="r")
    ModelInputDataset(str(tmp_path / "splits.npz")).save(
        split_dataset({"images": raw, "labels": labels}, {**PARAMS, "image_size": None})
    )
    bound = 200 * 2**20
    assert n * 3 * 96 * 96 * 4 > 3 * bound  # the float copy could not fit under the bound
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STREAMED_RUN), str(tmp_path / "splits.npz")],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["growth"] < bound, f"anonymous memory grew by {result['growth'] / 2**20:.0f} MB"
    assert result["accuracy"] > 0.5  # it learned from the streamed batches (chance: 0.25)
