"""`kedro edge trust / status / devices` against real OpenSSH servers on loopback (click's runner)."""

from __future__ import annotations

import getpass
import os
import pwd
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kedro_edge.cli import commands
from tests.conftest import needs_sshd
from tests.fleet.test_known_hosts import PREAMBLE

pytestmark = needs_sshd

NAMES = ["dev1", "dev2", "dev 3 'odd'"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from kedro_edge.testing import start_fleet

    with start_fleet(tmp_path_factory.mktemp("fleet"), NAMES, port=0) as running:
        yield running


def devices_yml(loopback, folder: Path, defaults: dict | None = None, **per_device: dict) -> Path:
    """The loopback registry with overrides, written to ``folder/devices.yml``."""
    raw = yaml.safe_load(loopback.devices_yml.read_text())
    raw["defaults"].update(defaults or {})
    for entry in raw["devices"]:
        entry.update(per_device.get(entry["name"].split()[0], {}))
    path = folder / "devices.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def edge(command: str, registry: Path, *args: str):
    runner = CliRunner(env={"COLUMNS": "250"})  # rich tables unwrapped
    return runner.invoke(commands, ["edge", command, "--devices-file", str(registry), *args], obj=None)


def per_device(output: str) -> list[str]:
    """The lines that start with a device name (the progress bar shares the output)."""
    return [line for line in output.splitlines() if line.split(":")[0] in NAMES]


def openssh_fingerprint(loopback, name: str) -> str:
    pub = loopback.device(name)["host_key"].with_suffix(".pub")
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def test_trust_prints_the_fingerprint_it_accepted_and_records_below_the_existing_lines(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_bytes(PREAMBLE)
    registry = devices_yml(fleet, tmp_path, {"known_hosts": str(known)})
    result = edge("trust", registry)
    assert result.exit_code == 0, result.output
    assert per_device(result.output) == [
        f"{n}: {openssh_fingerprint(fleet, n)} trusted and recorded in {known}" for n in NAMES
    ]
    recorded = known.read_bytes()
    assert recorded.startswith(PREAMBLE) and len(recorded.splitlines()) == 3 + len(NAMES)
    again = edge("trust", registry)
    assert again.exit_code == 0
    assert per_device(again.output) == [
        f"{n}: {openssh_fingerprint(fleet, n)} already trusted in {known}" for n in NAMES
    ]
    assert known.read_bytes() == recorded


@pytest.mark.parametrize(
    ("known_hosts", "why"),
    [
        (None, "'known_hosts' is null in devices.yml"),
        (
            "~no-such-user-kedro-edge/known_hosts",
            "'known_hosts: ~no-such-user-kedro-edge/known_hosts' has no home directory to expand '~' to",
        ),
    ],
)
def test_trust_with_no_known_hosts_file_to_record_into_is_refused(fleet, tmp_path, known_hosts, why):
    registry = devices_yml(fleet, tmp_path, {"known_hosts": known_hosts})
    result = edge("trust", registry, "--devices", "dev1")
    assert result.exit_code == 1
    (line,) = per_device(result.output)
    assert line.startswith("dev1: dev1 (")
    assert line.endswith(
        f"): refusing to trust its host key: no known_hosts file to record it in ({why}); "
        "set 'known_hosts:' to a file path, or pin 'host_key_fingerprint:'"
    )
    assert not list(tmp_path.rglob("known_hosts"))


def test_status_and_devices_create_nothing_on_a_fresh_device(fleet, tmp_path):
    home = Path(pwd.getpwnam(getpass.getuser()).pw_dir)  # the devices' login directory
    relative = f"kedro-edge-fresh-{secrets.token_hex(4)}"
    absent = tmp_path / "never made" / "work"
    registry = devices_yml(
        fleet, tmp_path, dev1={"workdir": str(absent)}, dev2={"workdir": relative},
        dev={"workdir": f"~/{relative}-tilde"},
    )  # fmt: skip
    in_home = set(os.listdir(home))

    status = edge("status", registry)
    devices = edge("devices", registry)

    assert status.exit_code == 0, status.output
    assert devices.exit_code == 0, devices.output
    assert not absent.parent.exists()
    assert not (home / relative).exists() and not (home / f"{relative}-tilde").exists()
    assert set(os.listdir(home)) - in_home == set()  # nothing new in the login's home
    # ... and they still say what they said: reachable, nothing active, what each device is
    rows = [line for line in status.output.splitlines() if any(n in line for n in NAMES)]
    assert len(rows) == 3 and all("yes" in r and r.count("none") == 2 for r in rows)
    rows = [line for line in devices.output.splitlines() if any(n in line for n in NAMES)]
    assert len(rows) == 3 and all("yes" in r and os.uname().machine in r and "GiB" in r for r in rows)
