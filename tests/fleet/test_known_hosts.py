"""known_hosts files: read as ssh reads them, appended to one line at a time, never rewritten."""

from __future__ import annotations

import base64
import multiprocessing
import threading
from pathlib import Path

import paramiko
import pytest
from paramiko.hostkeys import InvalidHostKey

from kedro_edge.fleet import known_hosts

# what a user's file may hold that paramiko's HostKeys.save() would drop or choke on
PREAMBLE = (
    b"# my fleet, maintained by hand\n"
    b"@cert-authority *.example.com ssh-ed25519 "
    b"AAAAC3NzaC1lZDI1NTE5AAAAIGt4Gdm32ctunbkjSAkCW1nAPRBzwarowieyA4efagam\n"
    b"@revoked * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOe8zWuHbtcapyi3b5XP1A36Zl0UjQtpVgdGTh497idA\n"
)


def keys(n: int) -> list[paramiko.PKey]:
    return [paramiko.ECDSAKey.generate() for _ in range(n)]


def test_markers_and_comments_are_read_without_error_and_revoked_keys_remembered(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_bytes(PREAMBLE + b"garbage line\n")
    with pytest.raises(InvalidHostKey):  # why we don't let paramiko read it
        paramiko.HostKeys(str(path))
    known = known_hosts.load(path)
    assert known.entries == [] and known.revoked == {
        "AAAAC3NzaC1lZDI1NTE5AAAAIOe8zWuHbtcapyi3b5XP1A36Zl0UjQtpVgdGTh497idA"
    }
    assert known_hosts.load(tmp_path / "missing").entries == []


def test_record_appends_one_openssh_line_and_keeps_every_byte(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_bytes(PREAMBLE + b"no-newline-at-end ssh-ed25519 AAAA")  # someone's unfinished line
    key = keys(1)[0]
    assert known_hosts.record(path, "[127.0.0.2]:2222", key)
    assert not known_hosts.record(path, "[127.0.0.2]:2222", key)  # there already: not twice
    text = path.read_bytes()
    assert text.startswith(PREAMBLE + b"no-newline-at-end ssh-ed25519 AAAA\n")
    assert text.endswith(f"[127.0.0.2]:2222 {key.get_name()} {key.get_base64()}\n".encode())
    assert known_hosts.load(path).has("[127.0.0.2]:2222", key)


def test_a_missing_file_and_folder_are_created_private(tmp_path):
    path = tmp_path / "new" / "known_hosts"
    assert known_hosts.record(path, "device.example", keys(1)[0])
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert path.read_text().startswith("device.example ecdsa-sha2-nistp256 ")


def test_threads_recording_at_once_lose_nothing(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_bytes(PREAMBLE)
    generated = keys(64)
    start = threading.Barrier(8)

    def trust(worker: int) -> None:
        start.wait()
        for i in range(worker, 64, 8):
            known_hosts.record(path, f"host{i}", generated[i])
            known_hosts.record(path, f"host{i}", generated[i])  # and again: still once

    threads = [threading.Thread(target=trust, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _assert_each_once(path, {f"host{i}": k for i, k in enumerate(generated)})


def _record_in_a_process(path: str, entries: list[tuple[str, str]]) -> None:
    for host, blob in entries:
        key = paramiko.PKey.from_type_string("ecdsa-sha2-nistp256", base64.b64decode(blob))
        known_hosts.record(Path(path), host, key)


def test_processes_recording_at_once_lose_nothing(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_bytes(PREAMBLE)
    generated = {f"host{i}": k for i, k in enumerate(keys(40))}
    work = [[(h, k.get_base64()) for h, k in list(generated.items())[p::4]] for p in range(4)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_record_in_a_process, args=(str(path), w)) for w in work]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    _assert_each_once(path, generated)


def _assert_each_once(path: Path, expected: dict[str, paramiko.PKey]) -> None:
    text = path.read_bytes()
    assert text.startswith(PREAMBLE)
    added = text[len(PREAMBLE) :].decode().splitlines()
    assert sorted(added) == sorted(f"{h} {k.get_name()} {k.get_base64()}" for h, k in expected.items())
