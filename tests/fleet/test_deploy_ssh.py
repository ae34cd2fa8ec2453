"""The real deployment over real OpenSSH servers on loopback addresses (no mocks on the SSH path).

Three devices, one with spaces, quotes and ';' in its name and workdir. Each scenario breaks
one device and checks that the healthy ones still finish.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kedro_edge.evaluate import ort_predict, session
from kedro_edge.export import to_onnx
from kedro_edge.fleet import rollout
from kedro_edge.fleet.deploy import deploy, survey
from kedro_edge.fleet.inventory import Fleet, parse_fleet
from kedro_edge.fleet.ssh import DeviceError, SSHEndpoint, fingerprint
from kedro_edge.models import ResidualCNN
from tests.conftest import needs_sshd

pytestmark = needs_sshd

ODD = 'pi "kitchen"; touch INJECTED'
NAMES = ["dev1", "dev2", ODD]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), NAMES, port=0) as running:
        yield running


def registry(loopback, **overrides) -> Fleet:
    """The loopback devices.yml, with per-device overrides ``{name: {key: value}}``."""
    raw = yaml.safe_load(loopback.devices_yml.read_text())
    for entry in raw["devices"]:
        entry.update(overrides.get(entry["name"], {}))
    return parse_fleet(raw, str(loopback.devices_yml), root=str(loopback.root))


def make_release(folder: Path, widths=(8, 16), seed=0) -> tuple[rollout.Release, np.ndarray]:
    import torch

    torch.manual_seed(seed)
    model = to_onnx(ResidualCNN(widths=widths).eval(), (1, 1, 8, 8)).SerializeToString()
    parity = np.random.default_rng(seed).random((6, 1, 8, 8), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    release = rollout.Release.prepare(model, {"test": True}, parity, folder)
    return release, ort_predict(session(model), parity)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_release(tmp_path_factory.mktemp("release"))


def by_device(report):
    return {entry["device"]: entry for entry in report}


def active_sha(loopback, name) -> str | None:
    current = loopback.device(name)["workdir"] / "current" / "model.onnx"
    return hashlib.sha256(current.read_bytes()).hexdigest() if current.exists() else None


def test_all_healthy_devices_install_verify_activate_and_benchmark(fleet, release, tmp_path):
    rel, reference = release
    report = by_device(deploy(registry(fleet), rel, reference, max_parallel=3, max_parallel_benchmarks=1))
    for name in NAMES:
        entry = report[name]
        assert entry["status"] == "ok", entry["error"]
        assert active_sha(fleet, name) == rel.sha256  # the bytes on the device match the hash
        assert entry["parity"]["top1_agreement"] == 1.0 and entry["parity"]["max_abs_diff"] < 1e-4
        assert entry["runs"] >= 100 and entry["p50_ms"] <= entry["p90_ms"]
        assert entry["ssh_connections"] == 1 and entry["remote_commands"] == 3  # probe, install, bench
        manifest = json.loads((fleet.device(name)["workdir"] / "current" / "manifest.json").read_text())
        assert manifest["sha256"] == rel.sha256
    # quoting: the odd name's workdir was used as a path, and nothing was run from it
    assert (fleet.device(ODD)["workdir"] / "current").is_symlink()
    assert not list(fleet.root.rglob("INJECTED")) and not Path("INJECTED").exists()
    # secrets stay out of the report
    text = json.dumps(list(report.values()))
    assert "PRIVATE KEY" not in text and "id_ed25519" not in text


def test_reshipping_the_same_model_moves_no_model_bytes(fleet, release):
    rel, reference = release
    deploy(registry(fleet), rel, reference, benchmark=False)
    again = deploy(registry(fleet), rel, reference, benchmark=False)
    for entry in again:
        assert entry["status"] == "ok" and entry["install"] == "present"
        assert entry["bytes_sent"] == 0 and entry["remote_commands"] == 2


def test_a_stopped_device_fails_alone(fleet, release):
    rel, reference = release
    fleet.stop_device("dev2")
    try:
        report = by_device(deploy(registry(fleet), rel, reference, benchmark=False))
    finally:
        fleet.start_device("dev2")
    assert report["dev2"]["status"] == "failed"
    assert "dev2 (" in report["dev2"]["error"] and "cannot connect" in report["dev2"]["error"]
    assert report["dev1"]["status"] == report[ODD]["status"] == "ok"


def test_a_changed_host_key_is_refused(fleet, release, tmp_path):
    rel, reference = release
    other, other_ref = make_release(tmp_path / "other", seed=1)
    fleet.rotate_host_key("dev1")
    before = active_sha(fleet, "dev1")
    report = by_device(deploy(registry(fleet), other, other_ref, benchmark=False))
    assert report["dev1"]["status"] == "failed" and "host key CHANGED" in report["dev1"]["error"]
    assert active_sha(fleet, "dev1") == before  # nothing reached it
    assert report["dev2"]["status"] == "ok" and active_sha(fleet, "dev2") == other.sha256
    # the device was reinstalled: forget its old key, then trust the new one
    host = f"[{fleet.device('dev1')['host']}]:"
    lines = [
        line for line in (fleet.root / "known_hosts").read_text().splitlines() if not line.startswith(host)
    ]
    (fleet.root / "known_hosts").write_text("\n".join(lines) + "\n")
    assert survey(registry(fleet), trust_new_host_keys=True)[0].status == "ok"  # explicit opt-in
    assert host in (fleet.root / "known_hosts").read_text()  # ... and recorded


def test_an_unknown_host_key_is_refused_unless_trusted_or_pinned(fleet, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    unknown = registry(fleet, dev1={"known_hosts": str(empty)}).select(["dev1"])[0]
    with pytest.raises(DeviceError, match="unknown host key; refusing"):
        SSHEndpoint(unknown).run(["true"])
    # pinned by fingerprint instead of known_hosts
    pub = fleet.device("dev1")["host_key"].with_suffix(".pub").read_text().split()
    import base64

    import paramiko

    key = paramiko.Ed25519Key(data=base64.b64decode(pub[1]))
    pinned = registry(fleet, dev1={"known_hosts": None, "host_key_fingerprint": fingerprint(key)})
    assert SSHEndpoint(pinned.select(["dev1"])[0]).run(["true"]).code == 0
    wrong = registry(fleet, dev1={"known_hosts": None, "host_key_fingerprint": "SHA256:" + "A" * 43})
    with pytest.raises(DeviceError, match="does not match the pinned"):
        SSHEndpoint(wrong.select(["dev1"])[0]).run(["true"])
    assert empty.read_text() == ""  # refusing records nothing


def test_a_hanging_device_costs_its_timeout_and_blocks_no_one(fleet, release, tmp_path):
    rel, reference = release
    hang = tmp_path / "hanging python"
    hang.write_text("#!/bin/sh\nsleep 60\n")
    hang.chmod(hang.stat().st_mode | stat.S_IEXEC)
    hung = registry(fleet, dev2={"python": str(hang), "command_timeout": 2})
    report = by_device(deploy(hung, rel, reference, max_parallel=3, benchmark=False))
    assert report["dev2"]["status"] == "failed" and "timed out after 2 s" in report["dev2"]["error"]
    assert report["dev1"]["status"] == report[ODD]["status"] == "ok"


def test_a_transfer_killed_half_way_leaves_nothing_at_the_final_path_and_the_retry_succeeds(fleet, tmp_path):
    big, _ = make_release(tmp_path / "big", widths=(48, 96), seed=2)  # ~1 MB: many SFTP chunks
    device = registry(fleet).select(["dev1"])[0]
    before = active_sha(fleet, "dev1")
    killed = []

    def sever(sent: int, total: int) -> None:
        if sent >= total // 2 and not killed:
            killed.append(fleet.kill_sessions("dev1"))

    endpoint = SSHEndpoint(device)
    with pytest.raises(DeviceError):
        rollout.install(endpoint, big, on_upload=sever)
    endpoint.close()
    assert killed and killed[0] >= 1
    versions = fleet.device("dev1")["workdir"] / "versions"
    assert not (versions / big.sha256).exists()
    assert active_sha(fleet, "dev1") == before  # still the complete old version
    retry = SSHEndpoint(device)
    result = rollout.install(retry, big)
    retry.close()
    assert result["install"] == "installed" and active_sha(fleet, "dev1") == big.sha256
    assert not [p for p in versions.iterdir() if p.name.startswith(".incoming-")]


def test_survey_reports_what_each_device_is(fleet):
    outcomes = survey(registry(fleet))
    for o in outcomes:
        assert o.status == "ok", o.error
        assert o.data["cpu_count"] == os.cpu_count()
        assert o.data["python"] == ".".join(map(str, sys.version_info[:3]))
        assert o.data["onnxruntime"][0].isdigit()
