"""A loopback SSH test fleet: one real OpenSSH ``sshd`` per device, on 127.0.0.2, 127.0.0.3, ...

Each device gets its own ed25519 host key and client key, its own ``sshd_config`` and a workdir
whose path holds the device's name; one ``known_hosts`` lists every host key, and
``devices.yml`` describes the fleet in the schema of ``kedro_edge.fleet.inventory``. Needs
``/usr/sbin/sshd`` (Debian's openssh-server: ``scripts/setup.sh --dev`` installs it). Nothing
here reads or writes ``~/.ssh``.

A pytest fixture, as Fabric ships its own test fixtures::

    import pytest
    from kedro_edge.testing import start_fleet

    @pytest.fixture(scope="module")  # sshd start-up is paid once per module
    def fleet(tmp_path_factory):
        with start_fleet(tmp_path_factory.mktemp("fleet"), ["pi", "jetson"], port=0) as fleet:
            yield fleet  # fleet.devices_yml, fleet.device("pi"), fleet.stop_device("pi"), ...

``port=0`` picks a free port, so concurrent test runs don't collide. From a shell::

    python -m kedro_edge.testing.fleet start --dir /tmp/fleet --devices 3   # prints devices.yml
    python -m kedro_edge.testing.fleet stop --dir /tmp/fleet
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import yaml

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 10.0  # seconds for one sshd to accept connections
STOP_TIMEOUT = 3.0  # seconds between SIGTERM and SIGKILL
GROUP = "loopback"
FILES = {  # device() key -> file name in root/<index>/
    "host_key": "ssh_host_ed25519_key",
    "key_filename": "id_ed25519",
    "authorized_keys": "authorized_keys",
    "sshd_config": "sshd_config",
    "pid_file": "sshd.pid",
    "log_file": "sshd.log",
}


class FleetError(RuntimeError):
    """An sshd of the test fleet did not start (the message ends with its log's tail)."""


class LoopbackFleet:
    """``names`` (or ``dev1..devN``) as sshd on ``127.0.0.{first_octet + i}:port``; see the module doc."""

    def __init__(
        self,
        root: str | Path,
        names: list[str] | int = 3,
        python: str = sys.executable,
        port: int = 2222,
        first_octet: int = 2,
    ) -> None:
        self.root = Path(root).absolute()
        self.names = [f"dev{i + 1}" for i in range(names)] if isinstance(names, int) else list(names)
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"device names must be non-empty and unique, got {self.names!r}")
        if not 1 <= first_octet or first_octet + len(self.names) - 1 > 254:
            raise ValueError(f"127.0.0.{first_octet}.. has no room for {len(self.names)} devices")
        self.python, self.port, self.first_octet = str(python), port, first_octet
        self._python: dict[str, str] = {}  # set_python() overrides
        self._pids: dict[str, int] = {}
        self._started = False

    # -- layout ---------------------------------------------------------------------------------
    def device(self, name: str) -> dict[str, Any]:
        """Everything about one device: host, port, user, key paths, workdir, pid file, pid, ..."""
        if name not in self.names:
            raise KeyError(f"no device named {name!r} in this fleet")
        i = self.names.index(name)
        d = self.root / str(i)
        host, python = f"127.0.0.{self.first_octet + i}", self._python.get(name, self.python)
        about = dict(name=name, index=i, host=host, port=self.port, user=getpass.getuser(), dir=d)
        about |= {key: d / file for key, file in FILES.items()}
        return about | dict(workdir=d / f"work {name}", python=python, pid=self._pids.get(name))

    @property
    def devices_yml(self) -> Path:
        return self.root / "devices.yml"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    # -- whole fleet ----------------------------------------------------------------------------
    def start(self) -> LoopbackFleet:
        """Keys, configs, ``known_hosts``, ``devices.yml``, then every sshd (all launched, then awaited)."""
        if self._started:
            return self
        if not os.access(SSHD, os.X_OK):
            raise FleetError(f"{SSHD} not found: install openssh-server (scripts/setup.sh --dev does)")
        if self.port == 0:
            self.port = _free_port([self.device(n)["host"] for n in self.names])
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self._prepare, self.names))
        self._write_known_hosts()
        self._write_devices_yml()
        self._started = True
        try:
            for name in self.names:
                self._launch(name)
            for name in self.names:
                self._await(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every sshd of this fleet, with its per-connection children; safe to call twice."""
        for name in self.names:
            self.stop_device(name)
        self._started = False

    def __enter__(self) -> LoopbackFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one device -----------------------------------------------------------------------------
    def stop_device(self, name: str) -> None:
        d = self.device(name)
        pid = self._pids.pop(name, None) or _read_pid(d["pid_file"])
        if pid:
            _kill_tree(pid, str(d["sshd_config"]))
        d["pid_file"].unlink(missing_ok=True)

    def start_device(self, name: str) -> None:
        """Start one device again (same keys); nothing happens if it runs."""
        pid = self._pids.get(name)
        if pid and _is_our_sshd(pid, str(self.device(name)["sshd_config"])):
            return
        self._launch(name)
        self._await(name)

    def rotate_host_key(self, name: str) -> None:
        """A new host key and a restarted sshd; ``known_hosts`` stays as it was, so clients must refuse it."""
        d = self.device(name)
        self.stop_device(name)
        for path in (d["host_key"], d["host_key"].with_suffix(".pub")):
            path.unlink(missing_ok=True)
        _keygen(d["host_key"], f"kedro-edge loopback host {d['index']}")
        self.start_device(name)

    def kill_sessions(self, name: str) -> int:
        """SIGKILL the listener's per-connection children (open sessions drop); returns how many died."""
        pid = self._pids.get(name)
        if not pid:
            raise FleetError(f"device {name!r} is not running")
        kids = _descendants(pid)
        _kill(kids, signal.SIGKILL)
        return len(kids)

    def set_python(self, name: str, path: str | Path | None) -> None:
        """Point one device's ``python:`` at ``path`` in devices.yml (``None``: back to the default)."""
        self.device(name)
        if path is None:
            self._python.pop(name, None)
        else:
            self._python[name] = str(path)
        self._write_devices_yml()

    # -- internals ------------------------------------------------------------------------------
    def _prepare(self, name: str) -> None:
        d = self.device(name)
        d["dir"].mkdir(parents=True, exist_ok=True)
        d["workdir"].mkdir(exist_ok=True)
        if not d["host_key"].exists():
            _keygen(d["host_key"], f"kedro-edge loopback host {d['index']}")
        if not d["key_filename"].exists():
            _keygen(d["key_filename"], f"kedro-edge loopback client {d['index']}")
        d["authorized_keys"].write_text(d["key_filename"].with_suffix(".pub").read_text())
        q = _quote
        d["sshd_config"].write_text(
            f"ListenAddress {d['host']}\nPort {self.port}\nHostKey {q(d['host_key'])}\n"
            f"PidFile {q(d['pid_file'])}\n"
            f"AuthorizedKeysFile {q(str(d['authorized_keys']).replace('%', '%%'))}\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
            "MaxStartups 100:30:200\nMaxSessions 50\nLogLevel INFO\n"
        )

    def _launch(self, name: str) -> None:
        d = self.device(name)
        if _accepts(d["host"], self.port):
            raise FleetError(f"device {name!r}: {d['host']}:{self.port} is already in use (another fleet?)")
        d["pid_file"].unlink(missing_ok=True)
        cmd = [SSHD, "-f", str(d["sshd_config"]), "-E", str(d["log_file"])]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:  # config errors; sshd forks into the background otherwise
            raise FleetError(
                f"device {name!r}: sshd exited {proc.returncode}: {proc.stderr.strip()}\n" + _tail(d)
            )

    def _await(self, name: str) -> None:
        d = self.device(name)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid = _read_pid(d["pid_file"])
            if pid and _alive(pid) and _accepts(d["host"], self.port):
                self._pids[name] = pid
                return
            time.sleep(0.02)
        raise FleetError(f"device {name!r}: sshd on {d['host']}:{self.port} did not start\n" + _tail(d))

    def _write_known_hosts(self) -> None:
        lines = []
        for name in self.names:
            d = self.device(name)
            keytype, key = d["host_key"].with_suffix(".pub").read_text().split()[:2]
            where = d["host"] if self.port == 22 else f"[{d['host']}]:{self.port}"
            lines.append(f"{where} {keytype} {key}\n")
        self.known_hosts.write_text("".join(lines))

    def _write_devices_yml(self) -> None:
        devices = []
        for name in self.names:
            d = self.device(name)
            entry = {"name": name, "host": d["host"], "key_filename": str(d["key_filename"])}
            entry["workdir"] = str(d["workdir"])
            if name in self._python:
                entry["python"] = self._python[name]
            devices.append(entry)
        doc = {
            "defaults": {
                "transport": "ssh",
                "port": self.port,
                "user": getpass.getuser(),
                "known_hosts": str(self.known_hosts),
                "python": self.python,
                "connect_timeout": 5,
                "command_timeout": 60,
                "group": GROUP,
            },
            "groups": {GROUP: {"threads": 1, "warmup": 20, "min_runs": 100, "min_seconds": 0.5}},
            "devices": devices,
        }
        tmp = self.devices_yml.with_suffix(".yml.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000))
        tmp.replace(self.devices_yml)  # readers never see half a file


def start_fleet(root: str | Path, names: list[str] | int = 3, **kwargs: Any) -> LoopbackFleet:
    """A started ``LoopbackFleet`` (also a context manager that stops it); see the module doc."""
    return LoopbackFleet(root, names, **kwargs).start()


def stop_dir(root: str | Path) -> int:
    """Stop the sshd recorded in ``root/<index>/sshd.pid`` (as the CLI's ``stop``); returns how many."""
    stopped = 0
    for pid_file in sorted(Path(root).absolute().glob("*/sshd.pid")):
        pid = _read_pid(pid_file)
        if pid and _kill_tree(pid, str(pid_file.parent / "sshd_config")):
            stopped += 1
        pid_file.unlink(missing_ok=True)
    return stopped


# -- processes and sockets ---------------------------------------------------------------------
def _keygen(path: Path, comment: str) -> None:
    cmd = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True)


def _quote(path: str | Path) -> str:
    if '"' in str(path) or "\n" in str(path):
        raise ValueError(f"sshd_config cannot hold the path {str(path)!r}: choose another fleet root")
    return f'"{path}"'


def _tail(d: dict[str, Any], lines: int = 15) -> str:
    try:
        return "sshd log: " + "\n".join(d["log_file"].read_text().splitlines()[-lines:])
    except OSError:
        return "sshd log: (none)"


def _accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port(hosts: list[str]) -> int:
    """A port that every one of ``hosts`` can bind now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise FleetError(f"no port is free on all of {hosts[0]}..{hosts[-1]}")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name: [state, ppid, ...]; [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: int) -> bool:
    return _stat(pid)[:1] not in ([], ["Z"], ["X"])  # a zombie is dead


def _is_our_sshd(pid: int, config: str) -> bool:
    """Guards against a recycled pid: the listener's command line names its own config."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return f" -f {config} -E " in cmdline and _alive(pid)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _kill_tree(pid: int, config: str) -> bool:
    """SIGTERM the listener and its descendants, SIGKILL what is left after a while."""
    if not _is_our_sshd(pid, config):
        return False
    _kill([pid, *_descendants(pid)], signal.SIGTERM)  # the listener first: it stops accepting
    return True


def _kill(pids: list[int], sig: int) -> None:
    """Send ``sig``, wait until all are gone, SIGKILL any left after ``STOP_TIMEOUT``."""
    for p in pids:
        with suppress(ProcessLookupError):
            os.kill(p, sig)
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for p in pids:
        with suppress(ProcessLookupError):
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kedro_edge.testing.fleet", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a fleet, print its devices.yml path, leave it running")
    start.add_argument("--dir", required=True, type=Path)
    start.add_argument("--devices", type=int, default=3)
    start.add_argument("--port", type=int, default=2222, help="0: a free port")
    start.add_argument("--first-octet", type=int, default=2)
    start.add_argument("--python", default=sys.executable)
    stop = sub.add_parser("stop", help="stop the fleet recorded in DIR (its pid files)")
    stop.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "start":
        began = time.monotonic()
        fleet = start_fleet(
            args.dir, args.devices, python=args.python, port=args.port, first_octet=args.first_octet
        )
        print(f"started {args.devices} devices in {time.monotonic() - began:.2f} s", file=sys.stderr)
        print(fleet.devices_yml)
    else:
        print(f"stopped {stop_dir(args.dir)} sshd", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
