"""Connections to devices: Fabric over SSH with verified host keys, or this machine itself.

Fabric's ``Connection`` accepts any host key (it installs paramiko's ``AutoAddPolicy`` and
never loads known_hosts). Here every connection loads the device's known_hosts and refuses
unknown, changed or ``@revoked`` keys, unless the key is pinned by fingerprint or the user
opted in to trusting new keys, which appends them to that known_hosts (``known_hosts.record``:
never paramiko's ``save_host_keys``, which rewrites the file). Commands are argument lists,
quoted for the remote shell with ``shlex``: nothing from devices.yml or file names reaches a
shell unquoted.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import select
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import tenacity
from fabric import Config, Connection

from kedro_edge.errors import KedroEdgeError
from kedro_edge.fleet import known_hosts
from kedro_edge.fleet.inventory import Device


class DeviceError(KedroEdgeError):
    """A device could not be reached or did not do what was asked; the message names it.

    ``kind``: ``unreachable`` (no connection: retried, and a rollout may excuse it),
    ``security`` (a changed, unknown or revoked host key, failed authentication: never
    excused) or ``device`` (it answered, and said no or failed).
    """

    def __init__(self, message: str, kind: str = "device") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


Feed = Callable[[str], Iterable[bytes] | None]
"""Given a command's first line of output, the bytes to send to its stdin (None: nothing)."""


@dataclass
class Counters:
    """What one endpoint cost: SSH connections, remote commands, bytes sent (uploads and stdin)."""

    connections: int = 0
    commands: int = 0
    bytes_sent: int = 0


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64>``, as ``ssh-keygen -lf`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class _PinnedKey(paramiko.MissingHostKeyPolicy):
    def __init__(self, expected: str) -> None:
        self.expected = expected

    def missing_host_key(self, client, hostname, key) -> None:
        if fingerprint(key) != self.expected:
            raise paramiko.SSHException(
                f"host key {fingerprint(key)} does not match the pinned {self.expected}"
            )


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """A key known_hosts lacks: refused, or (``record_in``: trusting) appended to that file."""

    def __init__(self, known: known_hosts.KnownHosts, record_in: Path | None) -> None:
        self.known, self.record_in = known, record_in
        self.recorded = False

    def missing_host_key(self, client, hostname, key) -> None:
        if self.known.is_revoked(key):
            revoked = f"host key {fingerprint(key)} is marked @revoked in known_hosts; refusing"
            raise paramiko.SSHException(revoked)
        if self.record_in is None:
            raise paramiko.SSHException(f"Server {hostname!r} not found in known_hosts")
        try:
            self.recorded = known_hosts.record(self.record_in, hostname, key)
        except OSError as exc:
            raise paramiko.SSHException(
                f"cannot record its host key in {self.record_in} ({exc.strerror or exc})"
            ) from None
        client.get_host_keys().add(hostname, key.get_name(), key)


AEAD = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class _Transport(paramiko.Transport):
    """paramiko's transport, with its reader thread waking once a second, not ten times, when
    the connection is idle: a rollout holds one connection per device open between its steps,
    and at hundreds of devices those wake-ups were a controller cost of their own. (Only how
    soon an idle thread notices a handshake timeout depends on it; closing does not.)"""

    _active_check_timeout = 1.0


def _transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """paramiko's transport, offering AES-GCM first: an AEAD cipher needs no separate MAC, which
    paramiko computes and compares in Python for every packet (a fifth of a rollout's controller
    CPU). A server without it negotiates the usual CTR + HMAC."""
    transport = _Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = options.ciphers
    options.ciphers = tuple(c for c in AEAD if c in offered) + tuple(c for c in offered if c not in AEAD)
    return transport


@functools.cache
def _fabric_config() -> Config:
    """One Fabric configuration for every connection (read-only here): building one loads and
    merges config files, and would cost each of hundreds of connections a few milliseconds."""
    return Config()


def known_hosts_path(device: Device) -> Path | None:
    """The device's known_hosts on this machine; None if it has none or ``~`` has no home to expand to."""
    if not device.known_hosts:
        return None
    expanded = os.path.expanduser(device.known_hosts)
    return None if expanded.startswith("~") else Path(expanded)


@dataclass
class SSHEndpoint:
    """One device over one SSH connection (opened on first use, closed by ``close``)."""

    device: Device
    trust_new_key: bool = False
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        d = self.device
        kwargs: dict = {
            "banner_timeout": d.connect_timeout, "auth_timeout": d.connect_timeout,
            "transport_factory": _transport,
        }  # fmt: skip
        if d.key_filename:
            kwargs.update(key_filename=os.path.expanduser(d.key_filename), look_for_keys=False)
        self.conn = Connection(
            d.host, user=d.user, port=d.port, connect_timeout=d.connect_timeout, connect_kwargs=kwargs,
            config=_fabric_config(),
        )  # fmt: skip
        client = self.conn.client
        self.known_hosts = known_hosts_path(d)
        self._policy: _KnownHostsPolicy | None = None
        if d.host_key_fingerprint:
            client.set_missing_host_key_policy(_PinnedKey(d.host_key_fingerprint))
            return
        if self.trust_new_key and self.known_hosts is None:  # never "accept anything, record nothing"
            why = (
                f"'known_hosts: {d.known_hosts}' has no home directory to expand '~' to"
                if d.known_hosts
                else "'known_hosts' is null in devices.yml"
            )
            raise DeviceError(
                f"{d.target}: refusing to trust its host key: no known_hosts file to record it in "
                f"({why}); set 'known_hosts:' to a file path, or pin 'host_key_fingerprint:'"
            )
        known = known_hosts.load(self.known_hosts) if self.known_hosts else known_hosts.KnownHosts()
        host, port = self.conn.host, self.conn.port  # as paramiko looks the key up
        known.install(client.get_host_keys(), host if port == 22 else f"[{host}]:{port}")
        self._policy = _KnownHostsPolicy(known, self.known_hosts if self.trust_new_key else None)
        client.set_missing_host_key_policy(self._policy)

    def _open(self) -> None:
        """Connect, retrying only what may pass (refused, timed out) with exponential backoff."""
        if self.conn.is_connected:
            return
        attempts = self.device.connect_attempts
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: getattr(e, "kind", None) == "unreachable"),
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential(multiplier=0.5, max=8),
            reraise=True,
        )
        try:
            retrying(self._open_once)
        except DeviceError as exc:
            if exc.kind == "unreachable" and attempts > 1:
                raise DeviceError(f"{exc} (after {attempts} attempts)", exc.kind) from None
            raise
        self.counters.connections += 1

    def _open_once(self) -> None:
        target = self.device.target
        try:
            self.conn.open()
        except paramiko.BadHostKeyException as exc:
            raise DeviceError(
                f"{target}: host key CHANGED (offered {fingerprint(exc.key)}, "
                f"known_hosts has {fingerprint(exc.expected_key)}); refusing. If the device was "
                f"reinstalled, remove the old key with `ssh-keygen -R` and trust the new one",
                "security",
            ) from None
        except paramiko.AuthenticationException as exc:
            raise DeviceError(f"{target}: authentication failed ({exc})", "security") from None
        except paramiko.SSHException as exc:
            message = str(exc)
            if "not found in known_hosts" in message:
                message = (
                    "unknown host key; refusing. Check its fingerprint, then trust it with "
                    "`kedro edge trust --devices <name>` (records it in known_hosts)"
                )
            kind = "security" if "host key" in message else "unreachable"
            raise DeviceError(f"{target}: {message}", kind) from None
        except TimeoutError:
            raise DeviceError(
                f"{target}: connect timed out after {self.device.connect_timeout:g} s", "unreachable"
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise DeviceError(f"{target}: cannot connect ({reason})", "unreachable") from None

    def host_key(self) -> dict[str, Any]:
        """Connect (running nothing) and say which host key was accepted, and how.

        ``fingerprint`` (``SHA256:...``), ``recorded`` (True: appended to ``known_hosts`` just
        now), ``known_hosts`` (the file, or None) and ``pinned`` (checked against devices.yml).
        """
        self._open()
        key = self.conn.client.get_transport().get_remote_server_key()
        return {
            "fingerprint": fingerprint(key),
            "recorded": bool(self._policy and self._policy.recorded),
            "known_hosts": None if self.known_hosts is None else str(self.known_hosts),
            "pinned": bool(self.device.host_key_fingerprint),
        }

    def run(self, argv: list[str], timeout: float | None = None, feed: Feed | None = None) -> Result:
        """Run ``argv`` on the device, every argument shell-quoted; never raises on exit codes.

        One exec channel on the open transport, read with ``select`` (invoke's runner, which
        Fabric's ``run`` uses, polls from helper threads and costs several times the CPU).
        With ``feed``, what it returns for the command's first output line goes to its stdin
        (a model streamed on the channel: no SFTP session, no request/response per chunk).
        """
        self._open()
        self.counters.commands += 1
        limit = timeout or self.device.command_timeout
        try:
            return _exec(self.conn.client.get_transport(), shlex.join(argv), limit, feed, self.counters)
        except TimeoutError:
            raise DeviceError(f"{self.device.target}: command timed out after {limit:g} s") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DeviceError(
                f"{self.device.target}: connection lost ({exc or type(exc).__name__})", "unreachable"
            ) from None

    def put(self, local: Path, remote: str) -> None:
        """Upload ``local`` to the absolute ``remote`` path over SFTP (no shell involved): the
        agent, on first contact; versions stream on the agent's own channel."""
        self._open()
        try:
            sftp = self.conn.sftp()
            sftp.get_channel().settimeout(self.device.command_timeout)
            # confirm=False saves a stat round trip: the agent's file is named by its sha256
            sftp.put(str(local), remote, confirm=False)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DeviceError(
                f"{self.device.target}: upload of {Path(remote).name} failed ({exc or type(exc).__name__})"
            ) from None
        self.counters.bytes_sent += local.stat().st_size

    def rename(self, src: str, dst: str) -> None:
        self._open()
        try:
            self.conn.sftp().posix_rename(src, dst)
        except OSError as exc:
            raise DeviceError(f"{self.device.target}: cannot rename {src} ({exc})") from None

    def close(self) -> None:
        """Close; a connection that already died (the device went away) is simply gone."""
        try:
            self.conn.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass


def _exec(
    transport: paramiko.Transport,
    command: str,
    limit: float,
    feed: Feed | None = None,
    counters: Counters | None = None,
) -> Result:
    """Run ``command`` in a new channel; its exit code and output, or TimeoutError after ``limit``.

    With ``feed``: once the first line of output is in, its chunks are sent to stdin, then EOF.
    A command that exits while being fed (it refused what came) is not an error here: its
    answer is read like any other.
    """
    deadline = time.monotonic() + limit
    channel = transport.open_session(timeout=limit)
    try:
        _start(channel, command)
        if feed is None:
            channel.shutdown_write()  # no stdin: a command that reads it sees EOF
        out, err = bytearray(), bytearray()
        while True:
            while channel.recv_ready():
                out += channel.recv(65536)
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if feed is not None and (b"\n" in out or channel.eof_received):
                first = out.split(b"\n", 1)[0].decode(errors="replace")
                _send(channel, feed(first), deadline, counters)
                feed = None
                continue
            if channel.closed and not channel.eof_received and not channel.recv_ready():
                if not transport.is_active():
                    raise EOFError("connection closed")
                break  # closed without EOF on a live connection: the server refused the command (-1)
            if channel.eof_received and not channel.recv_ready() and not channel.recv_stderr_ready():
                # all output is in; after EOF the channel always selects readable: wait, don't spin
                if not channel.status_event.wait(remaining):
                    raise TimeoutError
                break
            select.select([channel], [], [], min(remaining, 1.0))
        code = channel.recv_exit_status()
    finally:
        channel.close()
    return Result(code, out.decode(errors="replace"), err.decode(errors="replace"))


def _start(channel: paramiko.Channel, command: str) -> None:
    """``channel.exec_command(command)`` without waiting for the server's reply to the request, as
    OpenSSH's client does: the command's output (or the channel closing, if the server refused
    it) arrives one round trip sooner. The reply still comes and paramiko takes it as usual."""
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(channel.remote_chanid)
    m.add_string("exec")
    m.add_boolean(True)
    m.add_string(command)
    channel.transport._send_user_message(m)


def _send(
    channel: paramiko.Channel, chunks: Iterable[bytes] | None, deadline: float, counters: Counters | None
) -> None:
    """Send ``chunks`` then EOF; stop quietly if the command closed its end (its answer says why)."""
    try:
        for chunk in chunks or ():
            if channel.closed or channel.eof_received:
                break
            channel.settimeout(max(0.001, deadline - time.monotonic()))
            channel.sendall(chunk)
            if counters is not None:
                counters.bytes_sent += len(chunk)
        channel.shutdown_write()
    except TimeoutError:
        raise
    except OSError:  # closed under us: the command ended; read what it said
        pass
    finally:
        channel.settimeout(None)


@dataclass
class LocalEndpoint:
    """This machine as a device: the same operations without SSH (``transport: local``)."""

    device: Device
    root: Path = field(default_factory=Path.cwd)
    counters: Counters = field(default_factory=Counters)

    def run(self, argv: list[str], timeout: float | None = None, feed: Feed | None = None) -> Result:
        self.counters.commands += 1
        limit = timeout or self.device.command_timeout
        try:
            with subprocess.Popen(
                argv, cwd=self.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            ) as proc:
                try:
                    first = b""
                    if feed is not None:
                        first = proc.stdout.readline()
                        self._send(proc, feed(first.decode(errors="replace").rstrip("\n")))
                    out, err = proc.communicate(timeout=limit)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise DeviceError(f"{self.device.target}: command timed out after {limit:g} s") from None
        except OSError as exc:
            raise DeviceError(f"{self.device.target}: cannot run {argv[0]} ({exc.strerror})") from None
        return Result(proc.returncode, (first + out).decode(errors="replace"), err.decode(errors="replace"))

    def _send(self, proc: subprocess.Popen, chunks: Iterable[bytes] | None) -> None:
        try:
            for chunk in chunks or ():
                proc.stdin.write(chunk)
                self.counters.bytes_sent += len(chunk)
        except BrokenPipeError:  # the command ended; its answer says why
            pass

    def put(self, local: Path, remote: str) -> None:
        shutil.copyfile(local, self.root / remote)
        self.counters.bytes_sent += local.stat().st_size

    def rename(self, src: str, dst: str) -> None:
        os.replace(self.root / src, self.root / dst)

    def close(self) -> None:
        pass


Endpoint = SSHEndpoint | LocalEndpoint


def connect(device: Device, root: Path, trust_new_key: bool = False) -> Endpoint:
    """An endpoint for ``device``; ``root`` anchors a local device's relative workdir."""
    if device.transport == "local":
        return LocalEndpoint(device, root)
    return SSHEndpoint(device, trust_new_key)


def python_of(device: Device) -> str:
    """The device's interpreter; a local device defaults to this one (it has onnxruntime)."""
    if device.python:
        return device.python
    return sys.executable if device.transport == "local" else "python3"


def workdir_of(device: Device) -> str:
    """The workdir as the remote shell should see it: ``~/x`` means ``x`` in the login directory."""
    return device.workdir[2:] if device.workdir.startswith("~/") else device.workdir
