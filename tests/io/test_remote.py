"""Every dataset through fsspec URLs: fsspec's in-memory filesystem (an object store), a
filesystem that renames (fsspec's ``dir`` over a folder), and S3 on a local moto server."""

from __future__ import annotations

import io
import json

import fsspec
import numpy as np
import onnx
import pytest
from fsspec.implementations.local import LocalFileSystem
from kedro.io import DatasetError
from matplotlib.figure import Figure
from PIL import Image

from kedro_edge.errors import DataError
from kedro_edge.io import (
    FleetDataset,
    GlyphsDataset,
    ImageFolderDataset,
    ImageNpzDataset,
    JsonDataset,
    ModelFileDataset,
    NpzDataset,
    OnnxModelDataset,
    PngDataset,
    TabularDataset,
    TextDataset,
    TorchModuleDataset,
)
from kedro_edge.runtimes.onnx_export import to_onnx
from tests.conftest import conv_out_channels


@pytest.fixture
def mem():
    """A fresh folder of fsspec's memory filesystem (shared by the process: one per test)."""
    fs = fsspec.filesystem("memory")
    root = f"/t{np.random.default_rng().integers(1 << 40)}"
    yield fs, f"memory://{root}"
    fs.rm(root, recursive=True) if fs.exists(root) else None


def put(fs, url: str, data: bytes) -> None:
    with fs.open(url.removeprefix("memory://"), "wb") as fh:
        fh.write(data)


def test_written_datasets_round_trip_through_a_url(mem, teacher, splits):
    fs, root = mem
    JsonDataset(f"{root}/r.json").save({"a": 1})
    assert JsonDataset(f"{root}/r.json").load() == {"a": 1}
    TextDataset(f"{root}/r.md").save("# release")
    assert TextDataset(f"{root}/r.md").load() == "# release"
    NpzDataset(f"{root}/s.npz").save({"x": np.arange(3)})
    assert NpzDataset(f"{root}/s.npz").load()["x"].tolist() == [0, 1, 2]
    TorchModuleDataset(f"{root}/t.pt").save(teacher)
    assert conv_out_channels(TorchModuleDataset(f"{root}/t.pt").load()) == conv_out_channels(teacher)
    graph = to_onnx(teacher, splits.input_shape, 17)
    OnnxModelDataset(f"{root}/m.onnx").save(graph)
    assert OnnxModelDataset(f"{root}/m.onnx").load().graph.node == graph.graph.node
    model = ModelFileDataset(f"{root}/m.onnx").load()
    assert onnx.load_from_string(model.data).graph.node == graph.graph.node  # the bytes, unparsed
    assert model.version["path"] == f"{root}/m.onnx" and len(model.version["sha256"]) == 64
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    PngDataset(f"{root}/p.png").save(fig)
    assert PngDataset(f"{root}/p.png").load()[:4] == b"\x89PNG"
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(root.removeprefix("memory://"), detail=False)) == [
        "m.onnx",
        "p.png",
        "r.json",
        "r.md",
        "s.npz",
        "t.pt",
    ]  # fmt: skip  (nothing temporary left behind)


def test_read_only_datasets_load_from_a_url(mem, tmp_path):
    fs, root = mem
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((12, 8, 8), np.uint8), labels=np.arange(12) % 3)
    put(fs, f"{root}/own.npz", buf.getvalue())
    assert ImageNpzDataset(f"{root}/own.npz").load()["images"].shape == (12, 1, 8, 8)
    rows = "a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(12))
    put(fs, f"{root}/t.csv", rows.encode())
    assert TabularDataset(f"{root}/t.csv").load()["features"].shape == (12, 2)
    for cls in ("cat", "dog"):
        for i in range(5):
            img = io.BytesIO()
            Image.new("L", (10, 10), 40 * i).save(img, format="PNG")
            put(fs, f"{root}/imgs/{cls}/{i}.png", img.getvalue())
    loaded = ImageFolderDataset(f"{root}/imgs", size=8).load()
    assert loaded["images"].shape == (10, 1, 8, 8) and loaded["labels"].tolist() == [0] * 5 + [1] * 5
    glyphs = GlyphsDataset(f"{root}/g.npz", n_per_class=1, size=12).load()  # generated, written there
    assert glyphs["images"].shape[-1] == 12 and fs.isfile(f"{root}/g.npz".removeprefix("memory://"))
    key = tmp_path / "id_ed25519"
    key.write_text("not used")
    registry = {"devices": [{"name": "d1", "host": "127.0.0.1", "user": "edge", "key_filename": str(key)}]}
    put(fs, f"{root}/devices.yml", json.dumps(registry).encode())
    assert [d.name for d in FleetDataset(f"{root}/devices.yml").load().devices] == ["d1"]


def test_errors_name_the_url(mem):
    fs, root = mem
    with pytest.raises(DataError, match=rf"^{root}/none.json: file not found$"):
        JsonDataset(f"{root}/none.json").load()
    put(fs, f"{root}/bad.npz", b"not a zip")
    with pytest.raises(DataError, match=rf"^{root}/bad.npz: cannot read"):
        NpzDataset(f"{root}/bad.npz").load()
    put(fs, f"{root}/x.txt", b"a")
    with pytest.raises(DataError, match=rf"^{root}/x.txt: TabularDataset reads .csv or .npz files"):
        TabularDataset(f"{root}/x.txt").load()


def test_a_failed_save_to_an_object_store_leaves_the_previous_object(mem):
    fs, root = mem
    JsonDataset(f"{root}/r.json").save({"good": True})
    with pytest.raises(DatasetError, match="not JSON serializable"):  # fails while writing the local copy
        JsonDataset(f"{root}/r.json").save({"bad": object()})
    assert JsonDataset(f"{root}/r.json").load() == {"good": True}


def test_a_filesystem_that_renames_gets_write_then_rename(tmp_path, monkeypatch):
    """fsspec's ``dir`` filesystem over a folder: the upload goes to a temporary name, then ``mv``."""
    args = {"path": str(tmp_path), "fs": LocalFileSystem()}
    ds = JsonDataset("dir://reports/r.json", fs_args=args)
    ds.save({"v": 1})
    fs_class, moves = type(ds._location.fs), []
    mv = fs_class.mv
    monkeypatch.setattr(fs_class, "mv", lambda self, a, b, **kw: (moves.append((a, b)), mv(self, a, b, **kw)))
    ds.save({"v": 2})
    assert ds.load() == {"v": 2}
    assert (
        len(moves) == 1 and moves[0][0].startswith("reports/r.json.tmp-") and moves[0][1] == "reports/r.json"
    )

    def killed(self, a, b, **kw):
        raise OSError("connection lost before the rename")

    monkeypatch.setattr(fs_class, "mv", killed)
    with pytest.raises(DatasetError, match="connection lost"):
        ds.save({"v": 3})
    assert ds.load() == {"v": 2}  # the previous file, whole
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["r.json"]  # no partial upload left
