import hashlib
import os
import stat

import numpy as np
import pytest
import torch

from kedro_edge.compress.prune import prune
from kedro_edge.config import PruneParams, TrainParams
from kedro_edge.errors import DataError
from kedro_edge.io import (
    DigitsDataset,
    ImageFolderDataset,
    ImageNpzDataset,
    JsonDataset,
    NpzDataset,
    OnnxModelDataset,
    PngDataset,
    TorchModuleDataset,
)
from kedro_edge.io.atomic import atomic_write
from kedro_edge.runtimes.onnx_export import to_onnx
from tests.conftest import conv_out_channels


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failed_save_leaves_the_good_artifact_untouched(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"good model")

    def half_write(tmp):
        tmp.write_bytes(b"half a mod")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"good model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary left behind


def test_a_save_gets_the_umask_mode_without_touching_the_process_umask(tmp_path, monkeypatch):
    """Setting the umask to read it would race with ThreadRunner threads creating files."""
    umask = os.umask(0o027)
    try:

        def no_umask(_mask):
            raise AssertionError("atomic_write changed the process-wide umask")

        monkeypatch.setattr(os, "umask", no_umask)
        atomic_write(tmp_path / "report.json", lambda tmp: tmp.write_text("{}"))
    finally:
        monkeypatch.undo()
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o640  # 0666 & ~0027


def test_unsaveable_data_does_not_replace_the_file(tmp_path):
    ds = JsonDataset(str(tmp_path / "m.json"))
    ds.save({"ok": 1})
    before = _sha(tmp_path / "m.json")
    with pytest.raises(Exception, match="not JSON serializable"):
        ds.save({"bad": object()})
    assert _sha(tmp_path / "m.json") == before
    assert ds.load() == {"ok": 1}


def test_pruned_module_round_trips_with_its_new_shapes(tmp_path, teacher, splits):
    student, _ = prune(teacher, splits, PruneParams(ratio=0.5, steps=1, finetune_epochs=0), TrainParams())
    ds = TorchModuleDataset(str(tmp_path / "06_models" / "pruned.pt"))
    ds.save(student)
    loaded = ds.load()
    assert conv_out_channels(loaded) == conv_out_channels(student)
    x = splits.example()
    assert torch.equal(loaded(x), student(x))
    assert (tmp_path / "06_models" / "pruned.pt").stat().st_mode & 0o044  # readable like any file


def test_the_same_module_saves_to_the_same_bytes(tmp_path, teacher):
    """DVC hashes the file: a random temporary name inside it would re-run every later stage."""
    TorchModuleDataset(str(tmp_path / "a.pt")).save(teacher)
    TorchModuleDataset(str(tmp_path / "b" / "a.pt")).save(teacher)
    assert _sha(tmp_path / "a.pt") == _sha(tmp_path / "b" / "a.pt")


def test_onnx_model_round_trips(tmp_path, teacher, splits):
    model = to_onnx(teacher, splits.input_shape)
    ds = OnnxModelDataset(str(tmp_path / "m.onnx"))
    ds.save(model)
    assert ds.load().SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("cls", [TorchModuleDataset, OnnxModelDataset, NpzDataset, JsonDataset])
def test_missing_and_corrupt_files_name_the_file(tmp_path, cls):
    path = tmp_path / "artifact.bin"
    with pytest.raises(DataError, match=f"{path}: file not found"):
        cls(str(path)).load()
    path.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(DataError, match=f"{path}: cannot read") as err:
        cls(str(path)).load()
    assert "\n" not in str(err.value)


def test_torch_file_that_is_not_a_module_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "sd.pt")
    with pytest.raises(DataError, match="holds a dict, not a torch.nn.Module"):
        TorchModuleDataset(str(tmp_path / "sd.pt")).load()


def test_npz_round_trip_keeps_the_exact_file_name(tmp_path):
    ds = NpzDataset(str(tmp_path / "splits.data"))  # np.savez would have appended .npz
    ds.save({"x_train": np.ones((2, 1, 3, 3), np.float32), "y_train": np.arange(2)})
    assert (tmp_path / "splits.data").exists() and not (tmp_path / "splits.data.npz").exists()
    assert ds.load()["x_train"].shape == (2, 1, 3, 3)


def test_own_npz_with_other_key_names(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, X=np.zeros((12, 8, 8), np.uint8), y=np.arange(12) % 3)
    data = ImageNpzDataset(str(path), images_key="X", labels_key="y").load()
    assert data["images"].shape == (12, 1, 8, 8) and data["images"].dtype == np.uint8  # pixels as stored
    with pytest.raises(DataError, match=f"{path}: no array named 'images' \\(has: X, y\\)"):
        ImageNpzDataset(str(path)).load()


def test_own_npz_with_bad_arrays_names_the_file(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, images=np.full((12, 8, 8), np.nan, np.float32), labels=np.arange(12) % 3)
    with pytest.raises(DataError, match=f"{path}: 'images' contains NaN"):
        ImageNpzDataset(str(path)).load()


def test_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, images=np.array([object()], dtype=object), labels=np.arange(1))
    with pytest.raises(DataError, match="cannot read"):
        ImageNpzDataset(str(path)).load()


def test_image_folder_one_class_per_folder(tmp_path):
    from PIL import Image

    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.fromarray(np.full((20, 30), 40 * label + i, np.uint8)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = ImageFolderDataset(str(tmp_path), size=16).load()
    assert data["images"].shape == (12, 1, 16, 16)
    assert list(data["labels"]) == [0] * 6 + [1] * 6
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        ImageFolderDataset(str(tmp_path)).load()


def test_digits_need_no_file():
    data = DigitsDataset().load()
    assert data["images"].shape == (1797, 1, 8, 8) and 0 <= data["images"].min() <= data["images"].max() <= 1


def test_png_dataset_writes_a_png(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2])
    PngDataset(str(tmp_path / "p.png")).save(fig)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
