"""A search's candidates measured on a loopback fleet of real OpenSSH servers, and on the host."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from kedro_edge.fleet import ssh
from kedro_edge.fleet.measure import MeasureOptions, measure_on_device, measure_on_host
from kedro_edge.fleet.ssh import DeviceError
from kedro_edge.runtimes import codec
from kedro_edge.runtimes.onnx_export import to_onnx
from tests.conftest import needs_sshd
from tests.fleet.loopback import PARITY, model, registry

pytestmark = needs_sshd

FAST = MeasureOptions(blocks=2, warmup=2, min_runs=4, min_seconds=0.0)
KEYS = {"ratio", "p50_ms", "reference_p50_ms", "block_ratios"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), ["m1", "m2"], port=0) as running:
        yield running


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The reference and two candidates (conv nets of other widths), as ONNX files."""
    folder = tmp_path_factory.mktemp("models")
    paths = []
    for i, widths in enumerate(((8, 16), (4, 8), (16, 16))):
        path = folder / f"model{i}.onnx"
        path.write_bytes(to_onnx(model(widths=widths), (1, 1, 8, 8)).SerializeToString())
        paths.append(path)
    return paths


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def connections(monkeypatch) -> list:
    """Every endpoint ``measure_on_device`` opens from now on."""
    opened, connect = [], ssh.connect

    def recording(*args, **kwargs):
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(ssh, "connect", recording)
    return opened


def test_a_batch_is_measured_in_one_connection_and_models_are_sent_once(fleet, models, monkeypatch):
    device = registry(fleet).select(["m1"])[0]
    reference, *candidates = models
    opened = connections(monkeypatch)
    first = measure_on_device(device, fleet.root, reference, candidates, PARITY, FAST)
    assert first["where"] == "m1" and sorted(first["results"]) == sorted(sha(c) for c in candidates)
    for result in first["results"].values():
        assert set(result) == KEYS and len(result["block_ratios"]) == FAST.blocks
        assert result["ratio"] == float(np.median(result["block_ratios"]))
    assert len(opened) == 1 and opened[0].counters.connections == 1
    buffer = io.BytesIO()
    np.save(buffer, PARITY)
    inputs = codec.shipped_size(buffer.getvalue())
    assert first["sent_bytes"] == inputs + sum(codec.shipped_size(m.read_bytes()) for m in models)

    again = measure_on_device(device, fleet.root, reference, candidates[::-1], PARITY, FAST)
    assert again["sent_bytes"] == inputs  # every model was in the device's cache
    assert sorted(again["results"]) == sorted(first["results"])
    assert opened[1].counters.connections == 1 and opened[1].counters.commands == 1  # one exec
    workdir = fleet.device("m1")["workdir"]
    cached = {p.name for p in (workdir / "search-cache").glob("*.onnx")}
    assert cached == {f"{sha(m)}.onnx" for m in models}
    assert not (workdir / ".rollout").exists() and not (workdir / "current").exists()  # no rollout state


def test_a_stopped_device_is_a_device_error_naming_it(fleet, models):
    device = registry(fleet, m2={"connect_attempts": 1}).select(["m2"])[0]
    fleet.stop_device("m2")
    try:
        with pytest.raises(DeviceError, match=r"^m2 \(.*cannot connect") as caught:
            measure_on_device(device, fleet.root, models[0], models[1:], PARITY, FAST)
        assert caught.value.kind == "unreachable" and "\n" not in str(caught.value)
    finally:
        fleet.start_device("m2")


def test_the_host_gives_the_same_answer_shape(fleet, models):
    device = registry(fleet).select(["m2"])[0]
    reference, *candidates = models
    on_device = measure_on_device(device, fleet.root, reference, candidates, PARITY, FAST)
    on_host = measure_on_host(reference, candidates, PARITY, FAST)
    assert on_host["where"] == "host" and on_host["sent_bytes"] == 0
    assert set(on_host) == set(on_device) and sorted(on_host["results"]) == sorted(on_device["results"])
    assert set(on_host["facts"]) == set(on_device["facts"])
    for result in on_host["results"].values():
        assert set(result) == KEYS and result["ratio"] == float(np.median(result["block_ratios"]))


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_an_agent_refusal_is_a_device_error_naming_the_device_or_the_host(fleet, models):
    device = registry(fleet).select(["m1"])[0]
    absent = MeasureOptions(blocks=1, warmup=1, min_runs=1, min_seconds=0.0, providers=("NoSuchProvider",))
    with pytest.raises(DeviceError, match=r"^m1 \(.*\): measure: asked for NoSuchProvider but"):
        measure_on_device(device, fleet.root, models[0], models[1:2], PARITY, absent)
    with pytest.raises(DeviceError, match=r"^host: measure: asked for NoSuchProvider but"):
        measure_on_host(models[0], models[1:2], PARITY, absent)
