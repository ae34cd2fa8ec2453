"""S3 for real, on a local S3-compatible server (moto's server mode on 127.0.0.1): every dataset
written and read through ``s3://`` with Kedro-style credentials, and DVC with an S3 remote."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import s3fs
from matplotlib.figure import Figure
from moto.server import ThreadedMotoServer

from kedro_edge.io import (
    JsonDataset,
    ModelFileDataset,
    NpzDataset,
    OnnxModelDataset,
    PngDataset,
    TorchModuleDataset,
)
from kedro_edge.lineage.versioning import file_hashes
from kedro_edge.runtimes.onnx_export import to_onnx
from tests.conftest import conv_out_channels
from tests.pipelines.project import env

BUCKET = "kedro-edge"


@pytest.fixture(scope="module")
def s3():
    """The server's endpoint and the credentials a catalog entry would name (conf/local)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint},
    }
    s3fs.S3FileSystem(**credentials).mkdir(BUCKET)
    yield endpoint, credentials
    server.stop()


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch):
    """Nothing may reach a real AWS endpoint: no instance metadata, no profile."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)


def test_every_written_dataset_round_trips_through_s3(s3, teacher, splits):
    _, creds = s3
    url = f"s3://{BUCKET}/run1"
    JsonDataset(f"{url}/r.json", credentials=creds).save({"a": 1})
    assert JsonDataset(f"{url}/r.json", credentials=creds).load() == {"a": 1}
    NpzDataset(f"{url}/s.npz", credentials=creds).save({"x": np.arange(4)})
    assert NpzDataset(f"{url}/s.npz", credentials=creds).load()["x"].tolist() == [0, 1, 2, 3]
    TorchModuleDataset(f"{url}/t.pt", credentials=creds).save(teacher)
    loaded = TorchModuleDataset(f"{url}/t.pt", credentials=creds).load()
    assert conv_out_channels(loaded) == conv_out_channels(teacher)
    graph = to_onnx(teacher, splits.input_shape, 17)
    OnnxModelDataset(f"{url}/m.onnx", credentials=creds).save(graph)
    model = ModelFileDataset(f"{url}/m.onnx", credentials=creds).load()
    assert model.data == graph.SerializeToString() and model.version["path"] == f"{url}/m.onnx"
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    PngDataset(f"{url}/p.png", credentials=creds).save(fig)
    assert PngDataset(f"{url}/p.png", credentials=creds).load()[:4] == b"\x89PNG"
    assert "secret" not in str(JsonDataset(f"{url}/r.json", credentials=creds))  # never shown


def test_a_dvc_s3_remote_pushes_and_pulls_back_byte_for_byte(s3, tmp_path, teacher, splits):
    endpoint, _ = s3
    repo = tmp_path / "repo"
    repo.mkdir()

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=repo, env=env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout

    dvc = (sys.executable, "-m", "dvc")
    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    model = repo / "model.onnx"
    model.write_bytes(to_onnx(teacher, splits.input_shape, 17).SerializeToString())
    before = file_hashes(model)
    run(*dvc, "add", "-q", "model.onnx")
    run(*dvc, "remote", "add", "-d", "s3", f"s3://{BUCKET}/dvc")
    run(*dvc, "remote", "modify", "s3", "endpointurl", endpoint)
    run(*dvc, "remote", "modify", "--local", "s3", "access_key_id", "testing")  # secrets: config.local
    run(*dvc, "remote", "modify", "--local", "s3", "secret_access_key", "testing")
    run(*dvc, "push", "-q")
    shutil.rmtree(repo / ".dvc" / "cache")
    model.unlink()
    run(*dvc, "pull", "-q")
    assert file_hashes(model) == before
    assert "secret_access_key" not in (repo / ".dvc" / "config").read_text()
