"""Faults on the loopback fleet, through the rollout path ``kedro run`` uses.

Each scenario breaks one device and checks the verdict is honest, the healthy devices finish
when the policy allows, and ``assert_whole``: no device ends on a version that was not released
there, and no lease or partial upload is left behind. Three devices, one with spaces, quotes
and ';' in its name and workdir.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kedro_edge.config import RegressionParams
from kedro_edge.fleet import device as ops
from kedro_edge.fleet import device_gates
from kedro_edge.fleet.commands import survey
from kedro_edge.fleet.lease import Lease
from kedro_edge.fleet.ssh import DeviceError, SSHEndpoint
from tests.conftest import needs_sshd
from tests.fleet.loopback import (
    CFG,
    active,
    assert_whole,
    candidate,
    decisions,
    history,
    model,
    registry,
    run,
)

pytestmark = needs_sshd

ODD = 'pi "kitchen"; touch INJECTED'
NAMES = ["dev1", "dev2", ODD]
FAST = {"min_runs": 50, "min_seconds": 0.1, "warmup": 5}  # these tests are about faults, not speed
ALL_AT_ONCE = CFG.model_copy(update={"waves": ["100%"], "regression": RegressionParams(enabled=False)})
TOLERANT = ALL_AT_ONCE.model_copy(update={"max_failure_percentage": 50})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), NAMES, port=0) as running:
        yield running


def go(fleet, tmp_path, seed, cfg=ALL_AT_ONCE, names=NAMES, **kw):
    cand, reference = candidate(tmp_path, model(seed=seed))
    return cand, run(fleet, cand, reference, names, cfg=cfg, group=kw.pop("group", FAST), **kw)


def script(tmp_path: Path, name: str, body: str) -> str:
    """A stand-in for the device's python: a shell script that misbehaves, then runs the real one."""
    path = tmp_path / name
    path.write_text(f'#!/bin/sh\n{body}\nexec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return str(path)


def agents_running_in(workdir: Path) -> list[int]:
    """Processes whose working directory is the device's workdir (the agent runs there)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == str(workdir.resolve()):
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_a_healthy_fleet_is_released_and_odd_names_are_only_data(fleet, tmp_path):
    cand, record = go(fleet, tmp_path, seed=0)
    assert record["verdict"] == "released", record
    for entry in record["devices"]:
        assert entry["decision"] == "activated" and entry["ssh_connections"] == 1
        assert entry["measurement"]["parity"]["top1_agreement"] == 1.0
    for name in NAMES:
        assert active(fleet, name) == cand.sha256  # the bytes on the device match the hash
        manifest = json.loads((fleet.device(name)["workdir"] / "current" / "manifest.json").read_text())
        assert manifest["sha256"] == cand.sha256
    assert not list(fleet.root.rglob("INJECTED")) and not Path("INJECTED").exists()
    assert "PRIVATE KEY" not in json.dumps(record) and "id_ed25519" not in json.dumps(record)
    assert_whole(fleet, NAMES)


def test_an_unchanged_redeploy_moves_no_model_bytes(fleet, tmp_path):
    _, record = go(fleet, tmp_path, seed=0)
    assert record["verdict"] == "released"
    for entry in record["devices"]:
        assert entry["decision"] == "already active"
        assert entry["bytes_sent"] == 0 and entry["remote_commands"] == 2  # begin, release
    assert_whole(fleet, NAMES)


def test_a_stopped_device_is_partial_when_unreachable_is_excused_never_released(fleet, tmp_path):
    fleet.stop_device("dev2")
    try:
        excused = ALL_AT_ONCE.model_copy(update={"unreachable_is_failure": False})
        cand, record = go(fleet, tmp_path, seed=1, cfg=excused, overrides={"dev2": {"connect_attempts": 2}})
    finally:
        fleet.start_device("dev2")
    assert record["verdict"] == "partial"
    assert decisions(record) == {"dev1": "activated", "dev2": "failed", ODD: "activated"}
    failed = record["devices"][1]
    assert failed["failure"] == "unreachable" and "cannot connect" in failed["reason"]
    assert "after 2 attempts" in failed["reason"]
    assert_whole(fleet, NAMES)


def test_a_changed_host_key_is_a_security_failure_never_excused_as_unreachable(fleet, tmp_path):
    fleet.rotate_host_key("dev1")
    before = active(fleet, "dev1")
    excused = ALL_AT_ONCE.model_copy(update={"unreachable_is_failure": False})
    cand, record = go(fleet, tmp_path, seed=2, cfg=excused)
    assert record["verdict"] == "blocked"  # one of three failed, the policy allows none
    assert (
        record["devices"][0]["failure"] == "security" and "host key CHANGED" in record["devices"][0]["reason"]
    )
    assert active(fleet, "dev1") == before  # nothing reached it
    # with room for failures, the healthy devices finish; the verdict stays honest
    (tmp_path / "again").mkdir()
    cand, record = go(fleet, tmp_path / "again", seed=2, cfg=TOLERANT)
    assert record["verdict"] == "partial"
    assert decisions(record) == {"dev1": "failed", "dev2": "activated", ODD: "activated"}
    assert active(fleet, "dev1") == before
    # the device was reinstalled: forget its old key, then trust the new one
    host = f"[{fleet.device('dev1')['host']}]:"
    known = fleet.root / "known_hosts"
    known.write_text(
        "".join(line for line in known.read_text().splitlines(True) if not line.startswith(host))
    )
    assert survey(registry(fleet), trust_new_host_keys=True)[0].status == "ok"  # explicit opt-in
    assert_whole(fleet, NAMES)


def test_canary_waves_alone_are_partial_not_released(fleet, tmp_path):
    canary = ALL_AT_ONCE.model_copy(update={"waves": [1]})
    cand, record = go(fleet, tmp_path, seed=3, cfg=canary)
    assert record["verdict"] == "partial"
    assert decisions(record) == {"dev1": "activated", "dev2": "not in any wave", ODD: "not in any wave"}
    assert_whole(fleet, NAMES)


def test_a_hung_command_is_ended_on_the_device_and_its_lease_given_back(fleet, tmp_path):
    slow = {"dev2": {"command_timeout": 4, "group": "forever"}}
    forever = {"forever": {**FAST, "min_seconds": 3600.0}}  # dev2's benchmark would run for an hour
    before = active(fleet, "dev2")
    cand, record = go(fleet, tmp_path, seed=4, cfg=TOLERANT, overrides=slow, groups=forever)
    entry = record["devices"][1]
    assert entry["decision"] == "failed" and "timed out after 4 s" in entry["reason"]
    time.sleep(1.0)  # SIGALRM has fired by now (deadline 4 s, controller gave up at 9 s)
    assert agents_running_in(fleet.device("dev2")["workdir"]) == []
    assert active(fleet, "dev2") == before
    assert_whole(fleet, NAMES)


def test_an_agent_that_crashes_fails_its_device_alone(fleet, tmp_path):
    crash = script(tmp_path, "crashing python", 'case " $* " in *" bench "*) kill -9 $$;; esac')
    before = active(fleet, "dev2")
    cand, record = go(fleet, tmp_path, seed=5, cfg=TOLERANT, overrides={"dev2": {"python": crash}})
    entry = record["devices"][1]
    assert entry["decision"] == "failed" and "benchmark failed" in entry["reason"]
    assert record["verdict"] == "partial" and active(fleet, "dev2") == before
    assert_whole(fleet, NAMES)


def test_a_provider_that_fell_back_to_cpu_fails_the_device(fleet, tmp_path):
    group = {**FAST, "providers": ["OpenVINOExecutionProvider"]}
    cand, record = go(fleet, tmp_path, seed=6, group=group)
    assert record["verdict"] == "blocked"
    reason = record["devices"][0]["reason"]
    assert (
        "asked for OpenVINOExecutionProvider but the ONNX Runtime session runs on CPUExecutionProvider"
        in reason
    )
    assert_whole(fleet, NAMES)


def test_a_transfer_killed_half_way_is_cleaned_by_the_next_rollout(fleet, tmp_path):
    big, reference = candidate(tmp_path, model((48, 96), seed=7))  # ~1 MB: many SFTP chunks
    dev1 = registry(fleet).select(["dev1"])[0]
    killed = []

    def sever(sent: int, total: int) -> None:
        if sent >= total // 2 and not killed:
            killed.append(fleet.kill_sessions("dev1"))

    endpoint, lease = SSHEndpoint(dev1), Lease("killed-rollout", ttl=10)
    with pytest.raises(DeviceError):
        ops.ship(endpoint, big, lease, on_upload=sever)
    endpoint.close()
    versions = fleet.device("dev1")["workdir"] / "versions"
    assert killed and list(versions.glob(".incoming-*"))  # the connection died: it could not clean up
    assert not (versions / big.sha256).exists()
    time.sleep(10)  # the dead rollout's lease lapses (ttl 10 s)
    record = run(fleet, big, reference, NAMES, cfg=ALL_AT_ONCE, group=FAST)
    assert record["verdict"] == "released" and active(fleet, "dev1") == big.sha256
    assert_whole(fleet, NAMES)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs as a device's workdir (root only)."""
    mount = tmp_path / "small disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_device_with_a_clear_line_and_keeps_none_of_our_files(
    fleet, tmp_path, small_disk
):
    big, reference = candidate(tmp_path, model((48, 96), seed=8))  # ~1 MB
    over = {"dev1": {"workdir": str(small_disk)}}
    filler = small_disk / "someone else's file"
    filler.write_bytes(b"\0" * 1_300_000)  # leaves ~0.7 MB: less than the upload needs
    record = run(fleet, big, reference, ["dev1"], cfg=ALL_AT_ONCE, group=FAST, overrides=over)
    reason = record["devices"][0]["reason"]
    assert record["verdict"] == "blocked" and "not enough disk space" in reason and "MB free" in reason
    assert not list((small_disk / "versions").glob(".incoming-*"))
    filler.unlink()
    # the disk fills up during the upload (another process writes): the partial upload is removed
    dev1 = registry(fleet, **over).select(["dev1"])[0]
    endpoint, lease = SSHEndpoint(dev1), Lease("filling", ttl=60)

    def fill(sent: int, total: int) -> None:
        if sent >= total // 2 and not filler.exists():
            with open(filler, "wb") as fh, contextlib.suppress(OSError):
                fh.write(b"\0" * 2_000_000)

    # SFTP pipelines its writes: ENOSPC shows in the upload or, at the latest, in install
    with pytest.raises(DeviceError, match="upload of model.onnx failed|No space left on device"):
        ops.ship(endpoint, big, lease, on_upload=fill)
    ops.release(endpoint, lease)
    endpoint.close()
    assert not list((small_disk / "versions").glob(".incoming-*")) and not (small_disk / ".rollout").exists()
    assert sorted(p.name for p in small_disk.iterdir() if p.name.startswith(".rollout")) == []
    filler.unlink()
    record = run(fleet, big, reference, ["dev1"], cfg=ALL_AT_ONCE, group=FAST, overrides=over)
    assert record["verdict"] == "released"
    workdir = small_disk
    assert (workdir / "current").resolve().name == big.sha256
    assert not (workdir / ".rollout").exists() and not list((workdir / "versions").glob(".incoming-*"))


def test_old_versions_are_collected_down_to_keep_versions(fleet, tmp_path):
    keep = ALL_AT_ONCE.model_copy(update={"keep_versions": 2})
    shas = []
    for seed in (20, 21, 22):
        folder = tmp_path / str(seed)
        folder.mkdir()
        cand, record = go(fleet, folder, seed=seed, cfg=keep, names=["dev2"])
        assert record["verdict"] == "released"
        shas.append(cand.sha256)
    versions = {p.name for p in (fleet.device("dev2")["workdir"] / "versions").iterdir()}
    assert versions == set(shas[-2:])  # current and what a rollback returns to
    assert (fleet.device("dev2")["workdir"] / "previous").resolve().name == shas[-2]
    assert_whole(fleet, ["dev2"])


def test_a_bug_in_the_controller_raises_instead_of_failing_devices(fleet, tmp_path, monkeypatch):
    before = {n: active(fleet, n) for n in NAMES}

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(device_gates, "evaluate", broken)
    with pytest.raises(ZeroDivisionError):
        go(fleet, tmp_path, seed=9)
    assert {n: active(fleet, n) for n in NAMES} == before
    assert_whole(fleet, NAMES)  # leases given back on the way out


def test_a_refused_connection_is_retried_with_backoff(fleet):
    fleet.stop_device("dev2")
    threading.Timer(1.0, fleet.start_device, args=("dev2",)).start()
    endpoint = SSHEndpoint(registry(fleet, dev2={"connect_attempts": 6}).select(["dev2"])[0])
    try:
        assert endpoint.run(["true"]).code == 0
    finally:
        endpoint.close()
    assert endpoint.counters.connections == 1
    fleet.start_device("dev2")


def test_history_survives_and_status_reports_it(fleet):
    outcomes = {o.device: o.data for o in survey(registry(fleet))}
    for name in NAMES:
        assert outcomes[name]["current"] == active(fleet, name)
        events = [e for e in history(fleet, name) if e["event"] == "released"]
        assert outcomes[name]["released"][0] == active(fleet, name) == events[-1]["sha"]


def test_a_lease_is_kept_while_renewed_and_lapses_within_its_ttl_once_renewal_stops(fleet, tmp_path):
    from kedro_edge.fleet.lease import Keeper

    cand, _ = candidate(tmp_path, model(seed=30))
    dev1 = registry(fleet).select(["dev1"])[0]
    ours, theirs = Lease("long-wave", ttl=3), Lease("another", ttl=60, lock_timeout=0.5)
    endpoint, other = SSHEndpoint(dev1), SSHEndpoint(dev1)
    try:
        ops.begin(endpoint, cand, ours)
        with Keeper(lambda name: ops.renew(endpoint, ours), interval=1.0) as keeper:
            keeper.hold("dev1")
            time.sleep(5)  # longer than the ttl: only the renewals keep it
            with pytest.raises(DeviceError, match="busy: rollout long-wave"):
                ops.begin(other, cand, theirs)
        time.sleep(3.5)  # renewal stopped (a dead controller): it lapses within ttl
        ops.begin(other, cand, theirs)
        ops.release(other, theirs)
    finally:
        endpoint.close()
        other.close()
    assert_whole(fleet, ["dev1"])
