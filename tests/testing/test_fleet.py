"""The loopback SSH fleet itself: real sshd, real paramiko, no mocks."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
import yaml

from kedro_edge.fleet.inventory import load_fleet
from kedro_edge.testing import FleetError, LoopbackFleet, start_fleet
from kedro_edge.testing.fleet import _alive, _read_pid
from tests.conftest import needs_sshd

pytestmark = needs_sshd

ODD = 'pi "kitchen"; 1'
NAMES = ["dev1", ODD, "dev3"]


def _home_ssh() -> dict[str, float]:
    ssh = Path.home() / ".ssh"
    return {str(p): p.stat().st_mtime for p in [ssh, *ssh.glob("*")] if p.exists()}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    before = _home_ssh()
    # A space in the root too: sshd_config must quote its paths.
    with start_fleet(tmp_path_factory.mktemp("fleet") / "fleet root", NAMES, port=0) as fleet:
        yield fleet
    assert _home_ssh() == before, "the fleet touched ~/.ssh"


def connect(fleet: LoopbackFleet, name: str) -> paramiko.SSHClient:
    d = fleet.device(name)
    client = paramiko.SSHClient()
    client.load_host_keys(str(fleet.root / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        d["host"],
        port=d["port"],
        username=d["user"],
        key_filename=str(d["key_filename"]),
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
        banner_timeout=5,
        auth_timeout=5,
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, _ = client.exec_command(command, timeout=10)
    return stdout.read().decode().strip()


def test_devices_yml_loads_with_the_inventory_schema(fleet: LoopbackFleet) -> None:
    loaded = load_fleet(fleet.devices_yml)
    assert [d.name for d in loaded.devices] == NAMES
    assert [d.host for d in loaded.devices] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert set(loaded.groups) == {"loopback"}
    assert loaded.groups["loopback"].min_runs == 100
    for device in loaded.select(group="loopback"):
        assert device.transport == "ssh" and device.port == fleet.port
        assert device.python == sys.executable and device.known_hosts == str(fleet.known_hosts)
        assert device.name in device.workdir and Path(device.workdir).is_dir()
    assert len(loaded.select(group="loopback")) == 3


def test_each_device_has_its_own_keys_and_directory(fleet: LoopbackFleet) -> None:
    devices = [fleet.device(n) for n in NAMES]
    assert len({d["dir"] for d in devices}) == 3 and all(d["dir"].name.isdigit() for d in devices)
    host_keys = {d["host_key"].with_suffix(".pub").read_text().split()[1] for d in devices}
    client_keys = {d["key_filename"].with_suffix(".pub").read_text().split()[1] for d in devices}
    assert len(host_keys) == 3 and len(client_keys) == 3
    assert len(fleet.known_hosts.read_text().splitlines()) == 3
    assert (fleet.root / "2" / "work dev3").is_dir() and (fleet.root / "1" / f"work {ODD}").is_dir()


@pytest.mark.parametrize("name", NAMES)
def test_exec_and_sftp_with_known_hosts_and_reject_policy(fleet: LoopbackFleet, name: str) -> None:
    workdir = fleet.device(name)["workdir"]
    client = connect(fleet, name)
    try:
        assert run(client, "echo ok") == "ok"
        payload = f"hello {name}\n".encode()
        with client.open_sftp() as sftp:
            sftp.putfo(io.BytesIO(payload), f"{workdir}/probe.txt")
            with sftp.open(f"{workdir}/probe.txt", "rb") as remote:
                assert remote.read() == payload
        assert (workdir / "probe.txt").read_bytes() == payload
    finally:
        client.close()


def test_a_key_of_another_device_is_refused(fleet: LoopbackFleet) -> None:
    d = fleet.device("dev1")
    client = paramiko.SSHClient()
    client.load_host_keys(str(fleet.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            d["host"],
            port=d["port"],
            username=d["user"],
            key_filename=str(fleet.device("dev3")["key_filename"]),
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
    client.close()


def test_set_python_rewrites_one_device(fleet: LoopbackFleet, tmp_path: Path) -> None:
    fleet.set_python(ODD, tmp_path / "hang.sh")
    try:
        pythons = {d.name: d.python for d in load_fleet(fleet.devices_yml).devices}
        assert pythons == {"dev1": sys.executable, ODD: str(tmp_path / "hang.sh"), "dev3": sys.executable}
    finally:
        fleet.set_python(ODD, None)
    assert "python" not in yaml.safe_load(fleet.devices_yml.read_text())["devices"][1]


def test_kill_sessions_drops_open_connections_but_keeps_the_listener(fleet: LoopbackFleet) -> None:
    client = connect(fleet, "dev1")
    try:
        channel = client.get_transport().open_session()
        channel.exec_command("sleep 30")
        assert fleet.kill_sessions("dev1") >= 1
        channel.settimeout(5)
        assert channel.recv(1) == b""  # closed, not a 30 s wait
        assert channel.recv_exit_status() != 0 or not client.get_transport().is_active()
    finally:
        client.close()
    again = connect(fleet, "dev1")
    assert run(again, "echo ok") == "ok"
    again.close()


def test_stop_device_refuses_then_start_device_serves_again(fleet: LoopbackFleet) -> None:
    fleet.stop_device("dev3")
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
        connect(fleet, "dev3")
    fleet.start_device("dev3")
    client = connect(fleet, "dev3")
    assert run(client, "echo ok") == "ok"
    client.close()


def test_rotated_host_key_is_rejected(fleet: LoopbackFleet) -> None:
    before = fleet.known_hosts.read_text()
    fleet.rotate_host_key(ODD)
    assert fleet.known_hosts.read_text() == before
    with pytest.raises(paramiko.BadHostKeyException):
        connect(fleet, ODD)
    client = connect(fleet, "dev1")
    assert run(client, "echo ok") == "ok"  # the others are untouched
    client.close()


def test_an_address_in_use_is_an_error_with_the_reason(fleet: LoopbackFleet, tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="already in use"):
        start_fleet(tmp_path, 1, port=fleet.port)  # 127.0.0.2, as the module's fleet
    assert not list(tmp_path.glob("*/sshd.pid"))


def test_stop_leaves_no_sshd_of_the_fleet(tmp_path: Path) -> None:
    fleet = LoopbackFleet(tmp_path, 2, port=0, first_octet=10)
    with fleet:
        pids = [_read_pid(fleet.device(n)["pid_file"]) for n in fleet.names]
        assert all(pid and _alive(pid) for pid in pids)
        client = connect(fleet, "dev1")  # an open session: a per-connection child to kill too
        children = _children_of(pids[0])
        assert children
    client.close()
    assert not any(_alive(p) for p in [*pids, *children])
    assert not list(tmp_path.glob("*/sshd.pid"))
    fleet.stop()  # idempotent


def test_cli_start_and_stop(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "kedro_edge.testing.fleet"]
    started = subprocess.run(
        [*cli, "start", "--dir", str(tmp_path), "--devices", "1", "--port", "0", "--first-octet", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    assert "RuntimeWarning" not in started.stderr
    assert Path(started.stdout.strip()) == tmp_path / "devices.yml"
    device = load_fleet(tmp_path / "devices.yml").devices[0]
    pid = _read_pid(tmp_path / "0" / "sshd.pid")
    assert pid and _alive(pid)
    stopped = subprocess.run(
        [*cli, "stop", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert stopped.returncode == 0, stopped.stderr
    assert not _alive(pid)
    with pytest.raises(OSError):
        socket.create_connection((device.host, device.port), timeout=2).close()


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
