"""Trusting host keys against real OpenSSH servers on loopback: many at once, into one known_hosts."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from kedro_edge.fleet.inventory import Fleet, parse_fleet
from kedro_edge.fleet.ssh import DeviceError, SSHEndpoint
from tests.conftest import needs_sshd
from tests.fleet.test_known_hosts import PREAMBLE

pytestmark = needs_sshd

NAMES = [f"dev{i}" for i in range(1, 9)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), NAMES, port=0) as running:
        yield running


def registry(loopback, known_hosts: Path) -> Fleet:
    raw = yaml.safe_load(loopback.devices_yml.read_text())
    raw["defaults"]["known_hosts"] = str(known_hosts)
    return parse_fleet(raw, str(loopback.devices_yml), root=str(loopback.root))


def openssh_fingerprint(loopback, name: str) -> str:
    """As OpenSSH itself prints it (``ssh-keygen -lf``), not computed by our code."""
    pub = loopback.device(name)["host_key"].with_suffix(".pub")
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def openssh_line(loopback, name: str) -> str:
    d = loopback.device(name)
    keytype, blob = d["host_key"].with_suffix(".pub").read_text().split()[:2]
    return f"[{d['host']}]:{d['port']} {keytype} {blob}"


def test_eight_threads_trusting_eight_devices_at_once_record_each_key_once(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_bytes(PREAMBLE)  # a comment, an @cert-authority and an @revoked line
    devices = registry(fleet, known).devices
    start, accepted, errors = threading.Barrier(len(devices)), {}, []

    def trust(device) -> None:
        endpoint = SSHEndpoint(device, trust_new_key=True)
        start.wait()  # all eight connect, and so record, at the same moment
        try:
            accepted[device.name] = endpoint.host_key()
        except Exception as exc:  # noqa: BLE001 - reported below, with the device
            errors.append(f"{device.name}: {exc}")
        finally:
            endpoint.close()

    threads = [threading.Thread(target=trust, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    text = known.read_bytes()
    assert text.startswith(PREAMBLE)  # the lines that were there, byte for byte, still on top
    added = text[len(PREAMBLE) :].decode().splitlines()
    assert sorted(added) == sorted(openssh_line(fleet, n) for n in NAMES)  # each once, as OpenSSH writes
    for name in NAMES:
        assert accepted[name]["fingerprint"] == openssh_fingerprint(fleet, name)
        assert accepted[name]["recorded"] and accepted[name]["known_hosts"] == str(known)
    # recorded keys are what an ordinary (refusing) connection now checks against
    for device in devices:
        endpoint = SSHEndpoint(device)
        assert endpoint.run(["true"]).code == 0
        assert not endpoint.host_key()["recorded"]
        endpoint.close()
    assert known.read_bytes() == text


def test_a_revoked_key_is_neither_trusted_nor_recorded(fleet, tmp_path):
    keytype, blob = openssh_line(fleet, "dev1").split()[1:]
    known = tmp_path / "known_hosts"
    known.write_text(f"# revoked after a break-in\n@revoked * {keytype} {blob}\n")
    before = known.read_bytes()
    device = registry(fleet, known).select(["dev1"])[0]
    with pytest.raises(DeviceError, match=r"host key SHA256:\S+ is marked @revoked in known_hosts; refusing"):
        SSHEndpoint(device, trust_new_key=True).host_key()
    with pytest.raises(DeviceError, match="@revoked"):
        SSHEndpoint(device).run(["true"])
    assert known.read_bytes() == before
