"""What lets one controller roll out to thousands: bounded connections, lazy lease renewal, a delay proxy.

On a loopback fleet of real OpenSSH servers; the figures at hundreds of devices are in
``benchmarks/fleet_scale.py``.
"""

from __future__ import annotations

import threading
import time

import paramiko
import pytest

from kedro_edge.config import DeploymentParams, parse
from kedro_edge.errors import ConfigError
from kedro_edge.fleet import known_hosts
from kedro_edge.fleet.lease import Keeper
from kedro_edge.fleet.ssh import SSHEndpoint
from kedro_edge.testing.delay import DelayProxy
from kedro_edge.testing.delay import main as delay_main
from tests.conftest import needs_sshd
from tests.fleet.loopback import active, assert_whole, candidate, decisions, model, registry, run

NAMES = [f"d{i}" for i in range(6)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), NAMES, port=0) as running:
        yield running


def accepted(fleet, name: str) -> int:
    return fleet.device(name)["log_file"].read_text(errors="replace").count("Accepted publickey")


@needs_sshd
def test_a_rollout_keeps_at_most_max_open_connections_and_reconnects_the_rest(fleet, tmp_path):
    cand, reference = candidate(tmp_path, model(seed=41))
    cfg = DeploymentParams(
        waves=["100%"], max_parallel=2, max_parallel_benchmarks=2, max_open_connections=2, lock_timeout=5,
        regression={"enabled": False, "blocks": 3},
    )  # fmt: skip
    before = {n: accepted(fleet, n) for n in NAMES}
    record = run(fleet, cand, reference, NAMES, cfg=cfg)
    assert record["verdict"] == "released", decisions(record)
    assert record["controller"]["connections_peak"] <= 2
    # installed while 6 were in the wave: the first devices' connections were closed, and
    # opened again to activate them
    reconnected = [n for n in NAMES if accepted(fleet, n) - before[n] > 1]
    assert reconnected, "no connection was closed: the bound did nothing"
    entries = {e["device"]: e for e in record["devices"]}
    assert {n: entries[n]["ssh_connections"] for n in NAMES} == {
        n: accepted(fleet, n) - before[n] for n in NAMES
    }
    for name in NAMES:
        assert active(fleet, name) == cand.sha256
    assert_whole(fleet, NAMES)


def test_max_open_connections_below_max_parallel_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"'deployment': max_open_connections \(4\) must be at least"):
        parse(DeploymentParams, {"max_parallel": 8, "max_open_connections": 4}, "deployment")


def test_the_keeper_renews_only_leases_no_command_renewed_lately():
    renewed: list[str] = []
    lock = threading.Lock()

    def renew(name: str) -> None:
        with lock:
            renewed.append(name)

    with Keeper(renew, interval=1.0, workers=4) as keeper:
        for name in ("busy", "idle1", "idle2"):
            keeper.hold(name)
        end = time.monotonic() + 2.5
        while time.monotonic() < end:  # a step working on "busy" renews it with every command
            keeper.touch("busy")
            time.sleep(0.02)
        keeper.touch("not held")  # touching a device whose lease we don't hold holds nothing
    assert "busy" not in renewed
    assert {"idle1", "idle2"} <= set(renewed)
    assert "not held" not in keeper.held and keeper.renewals == len(renewed)


def test_known_hosts_of_a_large_fleet_are_looked_up_not_scanned(monkeypatch):
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsqZcmNq9qXDn0+uo7zFnUu"
    hashed = paramiko.HostKeys.hash_host("[10.9.9.9]:22")
    text = "".join(f"[10.0.{i // 250}.{i % 250}]:22 ssh-ed25519 {blob}\n" for i in range(10_000))
    known = known_hosts.parse(text + f"{hashed} ssh-ed25519 {blob}\n")
    calls = []
    real = known_hosts._matches
    monkeypatch.setattr(known_hosts, "_matches", lambda *a: calls.append(a) or real(*a))
    keys = paramiko.HostKeys()
    known.install(keys, "[10.0.39.249]:22")
    assert keys.lookup("[10.0.39.249]:22") is not None and len(keys) == 1
    assert len(calls) == 1  # the one hashed entry, not 10,001 entries
    keys = paramiko.HostKeys()
    known.install(keys, "[10.9.9.9]:22")
    assert keys.lookup("[10.9.9.9]:22") is not None


@needs_sshd
def test_the_delay_proxy_delays_each_way_and_counts_round_trips(fleet, tmp_path):
    d = fleet.device("d0")
    device = registry(fleet).select(["d0"])[0]
    proxy_host = "127.0.1." + d["host"].rsplit(".", 1)[1]
    line = fleet.known_hosts.read_text().splitlines()[d["index"]].split(None, 1)[1]
    (tmp_path / "kh").write_text(f"[{proxy_host}]:{fleet.port} {line}\n")
    through = device.model_copy(update={"host": proxy_host, "known_hosts": str(tmp_path / "kh")})
    stats = tmp_path / "links.jsonl"
    with DelayProxy({(proxy_host, fleet.port): (d["host"], fleet.port)}, 100, stats) as proxy:
        endpoint = SSHEndpoint(through)
        try:
            began = time.monotonic()
            assert endpoint.run(["echo", "through the proxy"]).stdout == "through the proxy\n"
            elapsed = time.monotonic() - began
        finally:
            endpoint.close()
        deadline = time.monotonic() + 5
        while not proxy.links() and time.monotonic() < deadline:
            time.sleep(0.05)
        (link,) = proxy.links()
    # never sooner than TCP's, the key exchange's, authentication's and the command's round trips
    assert elapsed >= 5 * 0.2
    assert link["turns"] >= 5 and link["bytes_up"] > 0 and link["bytes_down"] > 0
    assert link["upstream"] == f"{d['host']}:{fleet.port}"


def test_the_delay_proxy_serves_loopback_only(capsys):
    with pytest.raises(SystemExit) as exc:
        delay_main(["--delay-ms", "25", "127.0.1.2:2222=192.0.2.10:22"])
    assert exc.value.code == 2
    assert "192.0.2.10 is not a loopback address" in capsys.readouterr().err
