"""OpenSSH known_hosts files: read them as ssh does, and add a trusted key without rewriting them.

paramiko's ``HostKeys.load`` raises on ``@cert-authority`` lines, and its ``save`` (what
``AutoAddPolicy`` calls) rewrites the whole file from what it parsed, dropping comments and
markers, with nothing stopping two threads from saving at once. Here reading skips the lines
paramiko cannot use (markers, comments, malformed lines) but remembers ``@revoked`` keys, and
recording a key appends exactly one ``host key-type base64`` line, under a process-wide lock
and an advisory ``flock`` on the file, leaving every byte already there as it was.
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

_LOCK = threading.Lock()  # flock is per open file: threads of one process need their own lock


@dataclass
class KnownHosts:
    """What one known_hosts file says: host keys paramiko can check, and keys marked ``@revoked``."""

    entries: list[HostKeyEntry] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)  # base64 key blobs
    _by_name: tuple[dict[str, list[HostKeyEntry]], list[HostKeyEntry]] | None = field(
        default=None, repr=False, compare=False
    )

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return key.get_base64() in self.revoked

    def install(self, host_keys: paramiko.HostKeys, hostname: str | None = None) -> None:
        """Add the usable, unrevoked entries to ``host_keys`` (an ``SSHClient``'s): those for
        ``hostname`` (as paramiko looks it up: ``host``, or ``[host]:port`` off port 22), or all.

        One host's entries, not the whole file: paramiko's ``HostKeys.add`` scans what it holds,
        so loading a fleet's known_hosts into each of its clients would cost quadratic time;
        plain host names are looked up in an index for the same reason (hashed ones are tried
        one by one, as ssh does).
        """
        if hostname is None:
            chosen = [(name, e) for e in self.entries for name in e.hostnames]
        else:
            plain, hashed = self._index()
            chosen = [(hostname, e) for e in plain.get(hostname, [])]
            chosen += [(hostname, e) for e in hashed if _matches_any(e, hostname)]
        for name, entry in chosen:
            if entry.key is not None and not self.is_revoked(entry.key):
                host_keys.add(name, entry.key.get_name(), entry.key)

    def _index(self) -> tuple[dict[str, list[HostKeyEntry]], list[HostKeyEntry]]:
        """Plain host name -> its entries, and the hashed entries; built on first use (a parsed
        file does not change)."""
        if self._by_name is None:
            index: dict[str, list[HostKeyEntry]] = {}
            hashed = []
            for entry in self.entries:
                for name in entry.hostnames:
                    if name.startswith("|1|"):
                        hashed.append(entry)
                    else:
                        index.setdefault(name, []).append(entry)
            self._by_name = index, list(dict.fromkeys(hashed))
        return self._by_name

    def has(self, hostname: str, key: paramiko.PKey) -> bool:
        keys = paramiko.HostKeys()
        self.install(keys, hostname)
        return keys.check(hostname, key)


def _matches_any(entry: HostKeyEntry, hostname: str) -> bool:
    return any(name.startswith("|1|") and _matches(name, hostname) for name in entry.hostnames)


def _matches(name: str, hostname: str) -> bool:
    """A known_hosts host name (plain, or hashed ``|1|salt|hash``) names ``hostname``."""
    if name.startswith("|1|"):
        return paramiko.HostKeys.hash_host(hostname, name) == name
    return name == hostname


def parse(text: str) -> KnownHosts:
    """Read known_hosts text as ssh does, keeping what paramiko can check and the revoked keys."""
    known = KnownHosts()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            fields = line.split()
            if fields[0] == "@revoked" and len(fields) >= 4:
                known.revoked.add(fields[3])
            continue  # @cert-authority: host certificates are not checked by paramiko
        try:
            entry = HostKeyEntry.from_line(line)
        except (InvalidHostKey, paramiko.SSHException, ValueError):  # as ssh: skip a bad line
            entry = None
        if entry is not None:  # None: a key type paramiko doesn't know, or too few fields
            known.entries.append(entry)
    return known


def load(path: Path) -> KnownHosts:
    """The known_hosts at ``path``; a file that doesn't exist yet knows no host.

    Parsed once per version of the file (path, size, mtime): a fleet shares one known_hosts.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return KnownHosts()
    return _parsed(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _parsed(path: str, size: int, mtime_ns: int) -> KnownHosts:
    try:
        return parse(Path(path).read_text(errors="replace"))
    except FileNotFoundError:
        return KnownHosts()


def line_for(hostname: str, key: paramiko.PKey) -> str:
    """The line OpenSSH writes: ``hostname`` is ``host`` on port 22, else ``[host]:port`` (as paramiko
    passes it to a host key policy)."""
    return f"{hostname} {key.get_name()} {key.get_base64()}\n"


def record(path: Path, hostname: str, key: paramiko.PKey) -> bool:
    """Append ``hostname``'s ``key`` to ``path`` unless it is there already; True if appended.

    The file (and its folder, mode 0700, as ``~/.ssh``) is created if missing. Serialised
    against other threads and, through ``flock``, other processes that lock it too.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _LOCK:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            text = path.read_bytes()
            if parse(text.decode(errors="replace")).has(hostname, key):
                return False  # another thread or process recorded it while we connected
            line = line_for(hostname, key).encode()
            if text and not text.endswith(b"\n"):
                line = b"\n" + line  # never glue our line onto someone's last line
            os.write(fd, line)
            os.fsync(fd)
            return True
        finally:
            os.close(fd)  # releases the flock
