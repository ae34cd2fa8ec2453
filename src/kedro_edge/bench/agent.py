#!/usr/bin/env python3
"""kedro-edge device agent: one self-contained file that runs ON the device.

Shipped to ``<workdir>/agent/<sha256>.py`` and run with the device's own interpreter
(Python >= 3.8), with the workdir as its current directory. ``facts`` and the version
commands need only the standard library; ``bench`` and ``measure`` need numpy and onnxruntime.
Every command prints one JSON object on stdout. It imports nothing of kedro-edge.

    agent.py facts    WORKDIR                       reads only (also run as `python -c`)
    agent.py begin    WORKDIR SHA --lease ID [--need-bytes N] [--files NAME:SIZE,...]
                      take the lease, clean, check disk; with --files, receive them on stdin
                      (after a first line saying they are needed; NAME.xz / NAME.zz arrive
                      lzma / zlib compressed and are stored decompressed), verify the sha256 of
                      the decompressed model, move to versions/SHA;
                      [--measure [--against-current] BENCH-OPTIONS]: then benchmark it
    agent.py activate WORKDIR SHA --lease ID [--keep-versions N] [--release]
    agent.py refuse   WORKDIR SHA --lease ID --reason TEXT      record a refused candidate
    agent.py rollback WORKDIR --lease ID [--to SHA [--force]] [--allow-empty] [--release]
    agent.py renew    WORKDIR --lease ID                        push the lease's expiry back
    agent.py release  WORKDIR --lease ID                        give the lease up
    agent.py bench    MODEL PARITY [--baseline MODEL] [--blocks N] [--providers P,..] ...
    agent.py measure  WORKDIR --reference SHA --files NAME:SIZE,... [BENCH-OPTIONS]
                      a search's batch: after a first line naming the files it needs (models
                      not in <workdir>/search-cache), receive them on stdin (<sha256>.onnx[.xz|.zz]
                      verified, and inputs.npy), then time each model but the reference
                      interleaved against it: per model the median of block p50 ratios. No lease:
                      the cache is apart from everything a rollout uses

Leases. Every command that changes the device needs the lease ``<workdir>/.rollout``
({id, expires, by}): taken when free, expired or already ours, under an flock on
``<workdir>/.lock``. Its id is the rollout's, so two rollouts (even of the same model)
exclude each other; it lasts ``--ttl`` seconds unless renewed. ``--deadline S`` ends the
agent itself after S seconds (SIGALRM), so a command the controller gave up on does not
keep running on the device.

History. ``<workdir>/history`` is an append-only JSON-lines log of what was activated and
how it ended: ``released``, ``rolled back``, ``refused`` (and ``forced``). Replaying it gives
the stack of releases still standing; ``rollback`` pops the current one and returns to the
release below it, never to a refused or rolled-back version, and never toggles. ``previous``
always points at what a rollback would return to.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import lzma
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import sys
import time
import zlib

VERSIONS, CURRENT, PREVIOUS, LOCK, LEASE, HISTORY = (
    "versions",
    "current",
    "previous",
    ".lock",
    ".rollout",
    "history",
)
INCOMING = ".incoming-"
MODEL = "model.onnx"
CODECS = {".xz": lzma.LZMADecompressor, ".zz": zlib.decompressobj}  # wire suffix -> decompressor
HISTORY_SHOWN = 1000  # latest history events ``facts`` returns
DEFAULT_TTL = 600.0  # seconds a lease outlives a controller that stopped renewing it


class Refused(Exception):
    """The command cannot be done; its message is the device's one-line answer."""


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def facts(workdir):
    """What this device is, which versions are active and released, and who holds the lease.

    Reads only: a workdir that doesn't exist stays so (free disk is where it would be made).
    """
    out = {"ok": True}
    out.update(_machine(workdir))
    out.update(released=list(reversed(_stack(workdir))), lease=_lease(workdir))
    out.update(versions=_held(workdir), history=_history(workdir)[-HISTORY_SHOWN:])
    return out


def _held(workdir):
    """The versions whose model is on the device (complete: uploads in progress are not)."""
    folder = os.path.join(workdir, VERSIONS)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(n for n in names if not n.startswith(".") and _present(workdir, n))


def _machine(workdir):
    """Architecture, CPUs, memory, free disk, Python, onnxruntime; the active and previous versions."""
    disk = shutil.disk_usage(_nearest_existing(workdir))
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as fh:
            memory = int(fh.readline().split()[1]) * 1024
    try:
        import onnxruntime

        ort = onnxruntime.__version__
        available = onnxruntime.get_available_providers()
    except Exception as exc:  # the report says why, the facts still come back
        ort, available = "unavailable: " + type(exc).__name__, []
    return {
        "arch": platform.machine(),
        "system": platform.system(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory,
        "disk_free_bytes": disk.free,
        "python": platform.python_version(),
        "onnxruntime": ort,
        "available_providers": available,
        "workdir": os.path.abspath(workdir),
        "current": _target(os.path.join(workdir, CURRENT)),
        "previous": _target(os.path.join(workdir, PREVIOUS)),
    }


def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _target(link):
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


# -- the lease -----------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(workdir, timeout):
    """A short critical section: an exclusive flock on <workdir>/.lock (never held while measuring)."""
    fd = os.open(os.path.join(workdir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Refused(
                        "busy: " + os.path.join(os.path.abspath(workdir), LOCK) + " is locked"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def _lease(workdir):
    """The lease in force ({id, expires, by}), or None when there is none or it expired."""
    try:
        with open(os.path.join(workdir, LEASE)) as fh:
            lease = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(lease, dict) or lease.get("expires", 0) <= time.time():
        return None
    return lease


def _write_lease(workdir, lease_id, ttl):
    by = os.environ.get("USER", "?") + "@" + socket.gethostname()
    _write_json(os.path.join(workdir, LEASE), {"id": lease_id, "expires": time.time() + ttl, "by": by})


def _drop_lease(workdir, lease_id):
    held = _lease(workdir)
    if held is None or held.get("id") == lease_id:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(workdir, LEASE))


@contextlib.contextmanager
def leased(workdir, lease_id, ttl, timeout, release_after=False, release_on_error=False):
    """Take (or renew) the lease ``lease_id`` and hold the flock for the body.

    Waits up to ``timeout`` for another rollout's lease to be given up or to expire. With
    ``release_after`` the lease is given up when the body ends, however it ends; with
    ``release_on_error``, when the body fails.
    """
    deadline = time.monotonic() + timeout
    while True:
        with _locked(workdir, max(0.0, deadline - time.monotonic())):
            held = _lease(workdir)
            if held is None or held.get("id") == lease_id:
                _write_lease(workdir, lease_id, ttl)
                failed = True
                try:
                    yield
                    failed = False
                finally:
                    if release_after or (failed and release_on_error):
                        _drop_lease(workdir, lease_id)
                return
        if time.monotonic() > deadline:
            where = os.path.join(os.path.abspath(workdir), LEASE)
            left = max(0, int(held.get("expires", 0) - time.time()))
            raise Refused(
                f"busy: rollout {str(held.get('id'))[:16]} ({held.get('by')}) holds the lease {where} "
                f"(it lapses in {left} s unless renewed)"
            )
        time.sleep(0.2)


# -- history and versions --------------------------------------------------------------------
def _history(workdir):
    events = []
    with contextlib.suppress(FileNotFoundError):
        with open(os.path.join(workdir, HISTORY)) as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
    return events


def _stack(workdir):
    """The releases still standing, oldest first; the last is what ``current`` should be."""
    events = _history(workdir)
    current = _target(os.path.join(workdir, CURRENT))
    stack = [] if events or current is None else [current]  # a workdir from before the history
    for e in events:
        kind, sha = e.get("event"), e.get("sha")
        if kind == "released":
            stack.append(sha)
        elif kind == "rolled back":
            while stack and stack[-1] != e.get("to"):
                stack.pop()
        elif kind == "forced":  # on top: a rollback undoes the force
            stack.append(sha)
    return stack


def _record(workdir, event, sha, lease_id, **extra):
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, "sha": sha}
    entry.update(rollout=lease_id, **extra)
    with open(os.path.join(workdir, HISTORY), "a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _point(workdir, stack):
    """current -> the top of the stack, previous -> the one below (each swapped atomically)."""
    for name, sha in (
        (CURRENT, stack[-1] if stack else None),
        (PREVIOUS, stack[-2] if len(stack) > 1 else None),
    ):
        if sha is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(workdir, name))
        elif _target(os.path.join(workdir, name)) != sha:
            _swap_link(workdir, name, os.path.join(VERSIONS, sha))
    _fsync_dir(workdir)


def _present(workdir, sha):
    return os.path.isfile(os.path.join(workdir, VERSIONS, sha, "model.onnx"))


def _state(workdir, **extra):
    out = {
        "ok": True,
        "workdir": os.path.abspath(workdir),
        "current": _target(os.path.join(workdir, CURRENT)),
    }
    out["previous"] = _target(os.path.join(workdir, PREVIOUS))
    out.update(extra)
    return out


def _clean_incoming(workdir):
    """Remove every half-finished upload (any rollout's): we hold the lease, so none is live."""
    versions = os.path.join(workdir, VERSIONS)
    removed = 0
    for name in os.listdir(versions):
        if name.startswith(INCOMING):
            shutil.rmtree(os.path.join(versions, name), ignore_errors=True)
            removed += 1
    return removed


def begin(workdir, sha, lease_id, ttl, timeout, need_bytes, files=(), say=None, measure=None):
    """Take the lease, clear stale uploads, say whether ``sha`` is here; if not and ``files``
    (``[(name, size), ...]``) are given, receive them on stdin and install them; with
    ``measure`` (``bench`` keyword arguments, ``baseline`` True for the active release), then
    benchmark the installed version unless it is already the active one (``measurement``).

    With ``files``, the first answer (``model``: ``yes``|``no``) is a line of its own (``say``):
    the controller sends the bytes only after reading ``no``. They land in a fresh
    ``versions/.incoming-*`` folder; the model's sha256 is checked as it arrives; only a complete,
    verified folder is renamed to ``versions/<sha>`` (under the lease again, nothing active
    changes). A short or failed transfer removes its folder and gives the lease up.
    """
    os.makedirs(os.path.join(workdir, VERSIONS), exist_ok=True)
    with leased(workdir, lease_id, ttl, timeout, release_on_error=True):
        cleaned = _clean_incoming(workdir)
        present = _present(workdir, sha)
        free = shutil.disk_usage(os.path.join(workdir, VERSIONS)).free
        if not present and need_bytes and free < need_bytes:
            raise Refused(
                "not enough disk space in "
                + os.path.abspath(workdir)
                + ": "
                + f"{free / 1e6:.1f} MB free, the upload needs {need_bytes / 1e6:.1f} MB"
            )
        state = _state(workdir, model="yes" if present else "no", cleaned=cleaned, disk_free_bytes=free)
    if not files:
        return dict(state, install="present" if present else None)
    say(state)
    if present:
        state["install"] = "present"
    else:
        try:
            staging = _receive(workdir, sha, files, sys.stdin.buffer, need_bytes)
        except BaseException:
            _give_up(workdir, lease_id, timeout)
            raise
        with leased(workdir, lease_id, ttl, timeout, release_on_error=True):
            _install(workdir, sha, staging)
            state = _state(workdir, model="yes", install="installed", cleaned=cleaned, disk_free_bytes=free)
    if measure is not None and state["current"] != sha:
        version = os.path.join(workdir, VERSIONS, sha)
        against = state["current"] if measure.pop("baseline") else None
        state["measurement"] = bench(
            os.path.join(version, MODEL), os.path.join(version, "parity.npy"),
            baseline=against and os.path.join(workdir, VERSIONS, against, MODEL), **measure,
        )  # fmt: skip
        state["measurement"].pop("ok")
    return state


def _receive(workdir, sha, files, stream, limit=0):
    """Write ``files`` from ``stream`` into a new staging folder; its path, or an error with
    the folder removed. A file whose name ends in a codec's suffix (``model.onnx.xz``) is
    decompressed as it arrives, at most ``limit`` bytes (0: no limit); the sha256 of
    ``model.onnx`` is computed on the decompressed bytes."""
    versions = os.path.join(workdir, VERSIONS)
    staging = os.path.join(versions, INCOMING + sha + "-" + str(os.getpid()))
    os.mkdir(staging)
    try:
        for name, size in files:
            target = _decoder(name)[0]
            digest = _take(stream, name, size, os.path.join(staging, target), limit)
            if target == MODEL and digest != sha:
                raise Refused("sha256 mismatch on device: expected " + sha + ", got " + digest)
        return staging
    except BaseException:  # a full disk must not stay full of our leftovers
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _take(stream, name, size, path, limit=0):
    """Write the next ``size`` bytes of ``stream`` (file ``name`` as it came on the wire) to
    ``path``, decompressed as they arrive, at most ``limit`` bytes (0: no limit), and fsync it;
    the sha256 of what was written. On an error ``path`` may be left for the caller to remove."""
    decoder = _decoder(name)[1]
    digest = hashlib.sha256()
    written = 0
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = stream.read(min(left, 1 << 20))
            if not chunk:
                raise Refused(f"upload incomplete: {name} ended after {size - left} of {size} bytes")
            left -= len(chunk)
            data = _decode(decoder, chunk, name)
            written += len(data)
            if limit and written > limit:
                raise Refused(name + " decompresses to more than the " + str(limit) + " bytes announced")
            out.write(data)
            digest.update(data)
        if decoder is not None and not decoder.eof:
            raise Refused(name + " is truncated: its compressed stream did not end")
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _decoder(name):
    """(file name on disk, a streaming decompressor or None) for a name as it came on the wire."""
    for suffix, make in CODECS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], make()
    return name, None


def _decode(decoder, chunk, name):
    if decoder is None:
        return chunk
    try:
        return decoder.decompress(chunk)
    except (lzma.LZMAError, zlib.error) as exc:
        raise Refused(name + " is corrupt: " + str(exc)) from None


def _install(workdir, sha, staging):
    """Rename the verified staging folder to versions/<sha> (not activated)."""
    versions = os.path.join(workdir, VERSIONS)
    final = os.path.join(versions, sha)
    try:
        if _present(workdir, sha):
            return
        if os.path.isdir(final):  # a version folder without its model: what is left of a bad one
            shutil.rmtree(final)
        os.rename(staging, final)
        _fsync_dir(versions)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _give_up(workdir, lease_id, timeout):
    """Drop the lease after a failed transfer (best effort: it lapses on its own otherwise)."""
    with contextlib.suppress(Exception), _locked(workdir, timeout):
        _drop_lease(workdir, lease_id)


def activate(workdir, sha, lease_id, ttl, timeout, keep_versions, release_lease):
    """Make ``sha`` current (a released version); collect old versions down to ``keep_versions``."""
    with leased(workdir, lease_id, ttl, timeout, release_after=release_lease):
        if not _present(workdir, sha):
            raise Refused("version " + sha + " is not on this device")
        stack = _stack(workdir)
        if not stack or stack[-1] != sha:
            _record(workdir, "released", sha, lease_id)
            stack.append(sha)
        _point(workdir, stack)
        removed = _collect(workdir, stack, keep_versions) if keep_versions else []
        return _state(workdir, collected=removed)


def refuse(workdir, sha, lease_id, ttl, timeout, reason):
    with leased(workdir, lease_id, ttl, timeout, release_after=True):
        _record(workdir, "refused", sha, lease_id, reason=reason)
        return _state(workdir)


def rollback(workdir, to, force, allow_empty, lease_id, ttl, timeout, release_lease):
    """Back to the release below the current one (or to ``to``, which must have been released here).

    Repeating it walks further back; with nothing older it refuses (``allow_empty``: the
    rollout undoing a first release leaves nothing active).
    """
    with leased(workdir, lease_id, ttl, timeout, release_after=release_lease):
        stack = _stack(workdir)
        current = _target(os.path.join(workdir, CURRENT))
        if to is None:
            if not stack:
                raise Refused("nothing to roll back: no release is active")
            target = stack[-2] if len(stack) > 1 else None
            if target is None and not allow_empty:
                raise Refused("nothing older to roll back to: " + stack[-1] + " is the only release")
            if target is not None and not _present(workdir, target):
                raise Refused(
                    "the release before " + stack[-1] + ", " + target + ", is no longer on this device"
                )
            _record(workdir, "rolled back", stack[-1], lease_id, to=target)
            stack.pop()
        elif to in stack:
            if not _present(workdir, to):
                raise Refused("version " + to + " is no longer on this device")
            if stack[-1] != to:
                _record(workdir, "rolled back", stack[-1], lease_id, to=to)
                while stack[-1] != to:
                    stack.pop()
        else:
            if not _present(workdir, to):
                raise Refused("version " + to + " is not on this device")
            if not force:
                why = (
                    "was refused"
                    if any(e.get("sha") == to and e.get("event") == "refused" for e in _history(workdir))
                    else "was not released"
                )
                raise Refused(
                    "version " + to + " " + why + " on this device (use --force to activate it anyway)"
                )
            _record(workdir, "forced", to, lease_id, **{"from": stack[-1] if stack else None})
            stack.append(to)
        _point(workdir, stack)
        return _state(workdir, rolled_back_from=current)


def renew(workdir, lease_id, ttl, timeout):
    with leased(workdir, lease_id, ttl, timeout):
        return _state(workdir, expires_in=ttl)


def release(workdir, lease_id, ttl, timeout):
    with _locked(workdir, timeout):
        _drop_lease(workdir, lease_id)
        return _state(workdir)


def _collect(workdir, stack, keep_versions):
    """Remove versions outside the ``keep_versions`` newest standing releases (current included)."""
    keep = set(stack[-keep_versions:])
    removed = []
    versions = os.path.join(workdir, VERSIONS)
    for name in os.listdir(versions):
        if name.startswith(".") or name in keep:
            continue
        shutil.rmtree(os.path.join(versions, name), ignore_errors=True)
        removed.append(name)
    return sorted(removed)


def _swap_link(workdir, name, target):
    """Point <workdir>/<name> at target atomically (rename of a new symlink over the old)."""
    tmp = os.path.join(workdir, "." + name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, os.path.join(workdir, name))


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path, payload):
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as fh:
            json.dump(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:  # a full disk: leave nothing half-written behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _session(path, providers, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    session = ort.InferenceSession(path, opts, providers=providers)
    return session, (time.perf_counter() - t0) * 1000


def _single_stream(session, feeds, min_runs, min_seconds):
    """One query at a time until both ``min_runs`` and ``min_seconds`` are reached (MLPerf)."""
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        feed = feeds[len(times) % len(feeds)]
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1000)
    return times


def _summary(times, max_samples):
    ordered = sorted(times)
    mean = sum(times) / len(times)
    step = max(1, len(times) // max_samples)
    return {
        "runs": len(times),
        "p50_ms": _percentile(ordered, 50),
        "p90_ms": _percentile(ordered, 90),
        "p99_ms": _percentile(ordered, 99),
        "mean_ms": mean,
        "std_ms": (sum((t - mean) ** 2 for t in times) / len(times)) ** 0.5,
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "samples_ms": times[::step],
    }


def bench(
    model, parity, providers, threads, warmup, min_runs, min_seconds, max_samples, baseline, blocks,
    outputs=True,
):  # fmt: skip
    """Latency of ``model``; with ``baseline``, both measured interleaved in A B / B A blocks.

    Interleaving puts drift and heat on both models alike; the per-block medians are what
    the host's regression test compares. ``outputs``: also run the whole batch once for the
    parity outputs (a latency-only caller skips it).
    """
    import numpy as np

    session, load_ms = _session(model, providers, threads)
    used = session.get_providers()
    missing = [p for p in providers if p not in used]
    if missing:  # onnxruntime falls back to CPU with a warning: never report CPU under another name
        raise Refused(
            "asked for "
            + ",".join(missing)
            + " but the ONNX Runtime session runs on "
            + ",".join(used)
            + " (available here: "
            + ",".join(_available())
            + ")"
        )
    name = session.get_inputs()[0].name
    batch = np.load(parity, allow_pickle=False)
    feeds = [{name: batch[i : i + 1]} for i in range(len(batch))]
    for i in range(warmup):
        session.run(None, feeds[i % len(feeds)])
    peak_rss_mb = _peak_rss_mb()  # the candidate alone is loaded so far
    device = _machine(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(model)))))
    result = {"ok": True, "load_ms": load_ms, "peak_rss_mb": peak_rss_mb, "providers": used, "facts": device}
    if outputs:
        result["parity_outputs"] = session.run(None, {name: batch})[0].tolist()
    if baseline is None:
        result.update(_summary(_single_stream(session, feeds, min_runs, min_seconds), max_samples))
        return result
    base, base_load_ms = _session(baseline, providers, threads)
    for i in range(warmup):
        base.run(None, feeds[i % len(feeds)])
    runs, seconds = -(-min_runs // blocks), min_seconds / blocks
    a, b, a_blocks, b_blocks = [], [], [], []
    for k in range(blocks):  # A B, B A, A B, ...: neither model always runs first
        if k:  # fresh sessions per pair: a session's own memory layout shifts its latency a
            # little for its whole life; new ones each pair turn that offset into noise the
            # paired test sees, instead of a bias it would call significant
            session, base = _session(model, providers, threads)[0], _session(baseline, providers, threads)[0]
            for sess in (session, base):
                for i in range(min(warmup, 20)):
                    sess.run(None, feeds[i % len(feeds)])
        pair = ((session, a, a_blocks), (base, b, b_blocks))
        for sess, times, medians in pair if k % 2 == 0 else pair[::-1]:
            block = _single_stream(sess, feeds, runs, seconds)
            times.extend(block)
            medians.append(_percentile(sorted(block), 50))
    result.update(_summary(a, max_samples))
    result["block_p50_ms"] = a_blocks
    result["baseline"] = dict(_summary(b, max_samples), load_ms=base_load_ms, block_p50_ms=b_blocks)
    return result


# -- measure: a search's candidates against a reference, in a cache no rollout uses -----------
CACHE = "search-cache"
# Models the cache keeps, the most recently used (received or asked for) first: a search measures
# batches of new candidates against one reference, and 32 covers the reference, a batch or two
# and the candidates it asks for again, at a few MB each for the models kedro-edge makes.
CACHE_KEEP = 32
TEMPORARY = ".tmp-"  # + pid + "-" + name: a model being received, or a batch's inputs
CACHED = re.compile(r"^([0-9a-f]{64})\.onnx$")  # a model in the cache, named by its sha256
INPUTS = "inputs.npy"


def measure(workdir, reference, files, stream, say, options):
    """Latency of every model of ``files`` but ``reference``, each interleaved against it in
    A B / B A blocks (``bench`` with ``baseline``, ``options`` its settings).

    ``files`` (``[(name, size), ...]``) are ``<sha256>.onnx`` models (``.xz``/``.zz``: compressed)
    and one ``inputs.npy``, the float32 batch the queries come from. The first answer (``say``)
    names the files ``need``ed: all but the models already in ``<workdir>/search-cache``; the
    controller sends those, in order, on ``stream``. A model enters the cache only if its
    decompressed bytes have the sha256 it is named by. ``results``: per candidate sha256, the
    median over blocks of its block p50 / the reference's (drift slows both sides alike).
    """
    shas, inputs = _batch(reference, files)
    if options["blocks"] < 1:
        raise Refused("--blocks must be at least 1")
    cache = os.path.join(workdir, CACHE)
    os.makedirs(cache, exist_ok=True)
    batch = os.path.join(cache, TEMPORARY + str(os.getpid()) + "-" + INPUTS)
    with _cache_lock(cache) as fd:
        _clean_cache(cache)
        need = [name for name, _ in files if name == inputs or not _touch(_cached(cache, shas[name]))]
        say({"ok": True, "need": need})
        try:
            received = _fill(cache, [f for f in files if f[0] in need], shas, inputs, stream, batch)
            base = _cached(cache, reference)
            results = {
                sha: _ratios(bench(_cached(cache, sha), batch, baseline=base, outputs=False, **options))
                for sha in shas.values()
                if sha != reference
            }
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(batch)
        _evict(cache, fd, CACHE_KEEP)
    return {"ok": True, "results": results, "facts": _machine(workdir), "received_bytes": received}


def _batch(reference, files):
    """``{wire name: sha256}`` of the models and the inputs' wire name, or why the batch is wrong."""
    shas, inputs = {}, []
    for name, _ in files:
        target = _decoder(name)[0]
        match = CACHED.match(target)
        if match:
            if name in shas or match.group(1) in shas.values():
                raise Refused("model " + match.group(1) + " is listed twice in --files")
            shas[name] = match.group(1)
        elif target == INPUTS:
            inputs.append(name)
        else:
            raise Refused("measure takes <sha256>.onnx models and one inputs.npy, not " + repr(name))
    if len(inputs) != 1:
        raise Refused("measure needs one inputs.npy in --files, got " + str(len(inputs)))
    if reference not in shas.values():
        raise Refused("the reference " + reference + " is not among the models in --files")
    return shas, inputs[0]


def _cached(cache, sha):
    return os.path.join(cache, sha + ".onnx")


def _touch(path):
    """Mark a cached model as used now (the cache evicts the least recently used); False if absent."""
    try:
        os.utime(path)
        return True
    except FileNotFoundError:
        return False


def _fill(cache, files, shas, inputs, stream, batch):
    """Receive ``files`` from ``stream``: the models verified into the cache, the inputs to
    ``batch``; the bytes read."""
    received = 0
    for name, size in files:
        if name == inputs:
            _take(stream, name, size, batch)
        else:
            _cache_model(cache, name, size, shas[name], stream)
        received += size
    return received


def _cache_model(cache, name, size, sha, stream):
    """One model into a temporary file of the cache, checked against ``sha``, renamed into place:
    the cache never holds a model under a name its bytes don't have."""
    tmp = os.path.join(cache, TEMPORARY + str(os.getpid()) + "-" + sha + ".onnx")
    try:
        digest = _take(stream, name, size, tmp)
        if digest != sha:
            raise Refused("sha256 mismatch on device: " + name + " decompresses to sha256 " + digest)
        os.replace(tmp, _cached(cache, sha))
        _fsync_dir(cache)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _ratios(result):
    """What a search keeps of ``bench``'s answer: the candidate's latency relative to the reference."""
    a, b = result["block_p50_ms"], result["baseline"]["block_p50_ms"]
    ratios = [a[k] / b[k] for k in range(len(a))]
    return {
        "ratio": statistics.median(ratios),
        "p50_ms": result["p50_ms"],
        "reference_p50_ms": result["baseline"]["p50_ms"],
        "block_ratios": ratios,
    }


@contextlib.contextmanager
def _cache_lock(cache):
    """A shared flock on <cache>/.lock for a whole command: no model is evicted while a command
    that may measure it runs (eviction needs the lock exclusively)."""
    fd = os.open(os.path.join(cache, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield fd
    finally:
        os.close(fd)


def _evict(cache, fd, keep):
    """Remove all but the ``keep`` most recently used models; skipped while another command holds
    the cache (the next one to finish alone does it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    models = [e for e in os.scandir(cache) if CACHED.match(e.name)]
    models.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    for entry in models[keep:]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)


def _clean_cache(cache):
    """Remove what commands that died (their ``--deadline``, a lost connection) left half-received."""
    for name in os.listdir(cache):
        pid = name[len(TEMPORARY) :].split("-", 1)[0]
        if name.startswith(TEMPORARY) and pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(cache, name))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _peak_rss_mb():
    """This process's peak resident memory. VmHWM, not ru_maxrss: the latter survives exec
    on Linux and would report the parent's peak when the agent is started by a big process."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _available():
    import onnxruntime

    return onnxruntime.get_available_providers()


def _fail(message):
    return {"ok": False, "error": message}


def _files(text):
    """``manifest.json:123,model.onnx:456`` -> [(name, size), ...]; plain file names only."""
    files = []
    for item in text.split(","):
        name, _, size = item.rpartition(":")
        if not name or os.path.basename(name) != name or name.startswith(".") or not size.isdigit():
            raise argparse.ArgumentTypeError("bad --files entry " + repr(item))
        files.append((name, int(size)))
    return files


def _say(payload):
    """One JSON line on stdout, now (a first answer the controller waits for)."""
    json.dump(payload, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _parser():
    parser = argparse.ArgumentParser(prog="agent.py")
    parser.add_argument("--deadline", type=float, default=None, help="end this process after S seconds")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("facts").add_argument("workdir")
    commands = {
        "begin": ("workdir", "sha"),
        "activate": ("workdir", "sha"),
        "refuse": ("workdir", "sha"),
        "rollback": ("workdir",),
        "renew": ("workdir",),
        "release": ("workdir",),
    }
    for command, positional in commands.items():
        p = sub.add_parser(command)
        for arg in positional:
            p.add_argument(arg)
        p.add_argument("--lease", required=True, help="the rollout's id")
        p.add_argument("--ttl", type=float, default=DEFAULT_TTL)
        p.add_argument("--lock-timeout", type=float, default=60.0)
    sub.choices["begin"].add_argument("--need-bytes", type=int, default=0)
    sub.choices["begin"].add_argument("--files", type=_files, default=(), help="NAME:SIZE,... on stdin")
    sub.choices["activate"].add_argument("--keep-versions", type=int, default=0)
    sub.choices["refuse"].add_argument("--reason", default="")
    for command in ("activate", "rollback"):
        sub.choices[command].add_argument("--release", action="store_true", help="give the lease up after")
    rb = sub.choices["rollback"]
    rb.add_argument("--to", default=None)
    rb.add_argument("--force", action="store_true")
    rb.add_argument("--allow-empty", action="store_true")
    p = sub.add_parser("bench")
    p.add_argument("model")
    p.add_argument("parity")
    p.add_argument("--baseline", default=None)
    begin = sub.choices["begin"]
    begin.add_argument("--measure", action="store_true", help="then benchmark it (bench's options)")
    begin.add_argument("--against-current", action="store_true", help="interleaved with the active release")
    m = sub.add_parser("measure")
    m.add_argument("workdir")
    m.add_argument("--reference", required=True, help="the sha256 of the model the others are timed against")
    m.add_argument("--files", type=_files, required=True, help="NAME:SIZE,... the batch, on stdin")
    for q in (p, begin, m):
        q.add_argument("--blocks", type=int, default=10)
        q.add_argument("--providers", default="CPUExecutionProvider")
        q.add_argument("--threads", type=int, default=1)
        q.add_argument("--warmup", type=int, default=50)
        q.add_argument("--min-runs", type=int, default=200)
        q.add_argument("--min-seconds", type=float, default=2.0)
        q.add_argument("--max-samples", type=int, default=1 if q is m else 5000)  # measure keeps none
    return parser


def _measure_options(a):
    """``begin --measure``'s benchmark settings, as ``bench`` takes them."""
    if not a.measure:
        return None
    return dict(_bench_settings(a), baseline=a.against_current)


def _bench_settings(a):
    """The benchmark options of ``begin`` and ``measure``, as ``bench`` takes them."""
    return {
        "providers": a.providers.split(","), "threads": a.threads, "warmup": a.warmup,
        "min_runs": a.min_runs, "min_seconds": a.min_seconds, "max_samples": a.max_samples,
        "blocks": a.blocks,
    }  # fmt: skip


def _run(a):
    lease = (getattr(a, "lease", None), getattr(a, "ttl", None), getattr(a, "lock_timeout", None))
    if a.command == "facts":
        return facts(a.workdir)
    if a.command == "begin":
        return begin(a.workdir, a.sha, *lease, a.need_bytes, a.files, _say, _measure_options(a))
    if a.command == "activate":
        return activate(a.workdir, a.sha, *lease, a.keep_versions, a.release)
    if a.command == "refuse":
        return refuse(a.workdir, a.sha, *lease, a.reason)
    if a.command == "rollback":
        return rollback(a.workdir, a.to, a.force, a.allow_empty, *lease, a.release)
    if a.command == "renew":
        return renew(a.workdir, *lease)
    if a.command == "release":
        return release(a.workdir, *lease)
    if a.command == "measure":
        return measure(a.workdir, a.reference, a.files, sys.stdin.buffer, _say, _bench_settings(a))
    return bench(
        a.model, a.parity, a.providers.split(","), a.threads, a.warmup, a.min_runs, a.min_seconds,
        a.max_samples, a.baseline, a.blocks,
    )  # fmt: skip


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.deadline:  # the default action of SIGALRM ends the process, even inside onnxruntime
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(max(1, int(math.ceil(args.deadline))))
    try:
        result = _run(args)
    except Refused as exc:
        result = _fail(str(exc))
    except Exception as exc:
        result = _fail(type(exc).__name__ + ": " + str(exc))
    _say(result)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
