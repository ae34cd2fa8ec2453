#!/usr/bin/env python3
"""kedro-edge device agent: one self-contained file that runs ON the device.

Shipped to ``<workdir>/agent/<sha256>.py`` and run with the device's own interpreter
(Python >= 3.8). ``facts`` and ``install`` need only the standard library; ``bench`` needs
numpy and onnxruntime. Every command prints one JSON object on stdout. It imports nothing
of kedro-edge: the device needs none of the controller's packages.

    agent.py facts   WORKDIR                             reads only (also run as `python -c`)
    agent.py install WORKDIR SHA256 STAGING [--activate] [--lease ID] [--lock-timeout S]
    agent.py activate WORKDIR SHA256 [--lease ID]        current -> SHA256, previous -> old current
    agent.py rollback WORKDIR [--to SHA256] [--lease ID] current -> previous (or SHA256)
    agent.py release WORKDIR --lease ID                  give up this rollout's lease
    agent.py bench   MODEL PARITY [--baseline MODEL] [--blocks N] [--providers P,..]
                     [--threads N] [--warmup N] [--min-runs N] [--min-seconds S]

A rollout holds a lease (``<workdir>/.rollout``: its id and expiry) from install to
activate/rollback/release, so two rollouts cannot interleave on one device: the second
waits up to ``--lock-timeout`` and then reports the device busy. A rollout that was killed
can take its own lease back (same id) when it is run again.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
import time

VERSIONS, CURRENT, PREVIOUS, LOCK, LEASE = "versions", "current", "previous", ".lock", ".rollout"
LEASE_TTL = 1800.0  # seconds a lease outlives a rollout that died without releasing it


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def facts(workdir):
    """What this device is: architecture, CPUs, memory, free disk, Python and onnxruntime.

    Reads only: a workdir that doesn't exist stays so (free disk is where it would be made).
    """
    disk = shutil.disk_usage(_nearest_existing(workdir))
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as fh:
            memory = int(fh.readline().split()[1]) * 1024
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except Exception as exc:  # the report says why, the facts still come back
        ort = "unavailable: " + type(exc).__name__
    return {
        "ok": True,
        "arch": platform.machine(),
        "system": platform.system(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory,
        "disk_free_bytes": disk.free,
        "python": platform.python_version(),
        "onnxruntime": ort,
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


@contextlib.contextmanager
def locked(workdir, timeout):
    """One rollout at a time on this device: an exclusive flock on <workdir>/.lock."""
    fd = os.open(os.path.join(workdir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    busy = _fail("busy: another rollout holds " + os.path.join(workdir, LOCK))
                    raise SystemExit(busy) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def leased(workdir, lease, timeout):
    """Hold the flock, and the rollout lease ``lease`` (taken if free, expired or ours)."""
    deadline = time.monotonic() + timeout
    while True:
        with locked(workdir, max(0.0, deadline - time.monotonic())):
            holder = _lease_holder(workdir)
            if lease is None or holder is None or holder == lease:
                if lease is not None:
                    with open(os.path.join(workdir, LEASE), "w") as fh:
                        json.dump({"id": lease, "expires": time.time() + LEASE_TTL}, fh)
                yield
                return
        if time.monotonic() > deadline:
            busy = _fail("busy: rollout " + holder[:12] + " holds " + os.path.join(workdir, LEASE))
            raise SystemExit(busy)
        time.sleep(0.2)


def _lease_holder(workdir):
    try:
        with open(os.path.join(workdir, LEASE)) as fh:
            lease = json.load(fh)
    except (OSError, ValueError):
        return None
    return lease.get("id") if lease.get("expires", 0) > time.time() else None


def _drop_lease(workdir, lease):
    if lease is not None and _lease_holder(workdir) == lease:
        os.unlink(os.path.join(workdir, LEASE))


def _activate(workdir, sha):
    """current -> versions/sha, previous -> the old current; a no-op if sha is current."""
    current = _target(os.path.join(workdir, CURRENT))
    if current != sha:
        if current is not None:
            _swap_link(workdir, PREVIOUS, os.path.join(VERSIONS, current))
        _swap_link(workdir, CURRENT, os.path.join(VERSIONS, sha))
        _fsync_dir(workdir)


def _state(workdir, **extra):
    out = {"ok": True, "current": _target(os.path.join(workdir, CURRENT))}
    out["previous"] = _target(os.path.join(workdir, PREVIOUS))
    out.update(extra)
    return out


def activate(workdir, sha, lease, timeout):
    with leased(workdir, lease, timeout):
        if not os.path.isfile(os.path.join(workdir, VERSIONS, sha, "model.onnx")):
            return _fail("version " + sha + " is not on this device")
        _activate(workdir, sha)
        _drop_lease(workdir, lease)
        return _state(workdir)


def rollback(workdir, to, lease, timeout):
    """Back to ``previous`` (or to version ``to``); with no previous, nothing stays active."""
    with leased(workdir, lease, timeout):
        current = _target(os.path.join(workdir, CURRENT))
        target = to or _target(os.path.join(workdir, PREVIOUS))
        if to is not None and not os.path.isfile(os.path.join(workdir, VERSIONS, to, "model.onnx")):
            return _fail("version " + to + " is not on this device")
        if target is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(workdir, CURRENT))  # never had a release: nothing active
            _fsync_dir(workdir)
        elif target != current:
            _swap_link(workdir, CURRENT, os.path.join(VERSIONS, target))
            if current is not None:
                _swap_link(workdir, PREVIOUS, os.path.join(VERSIONS, current))
            _fsync_dir(workdir)
        _drop_lease(workdir, lease)
        return _state(workdir, rolled_back_from=current)


def release(workdir, lease, timeout):
    with leased(workdir, lease, timeout):
        _drop_lease(workdir, lease)
        return _state(workdir)


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


def install(workdir, sha, staging, activate_now, lease, lock_timeout):
    """Verify the staged model's sha256, move it to versions/<sha>, optionally make it current."""
    try:
        return _install(workdir, sha, staging, activate_now, lease, lock_timeout)
    except SystemExit:  # busy: the upload we were handed is ours alone to remove
        if staging != "-":
            shutil.rmtree(staging, ignore_errors=True)
        raise


def _install(workdir, sha, staging, activate_now, lease, lock_timeout):
    versions = os.path.join(workdir, VERSIONS)
    final = os.path.join(versions, sha)
    with leased(workdir, lease, lock_timeout):
        if os.path.isfile(os.path.join(final, "model.onnx")):
            status = "present"
        else:
            model = os.path.join(staging, "model.onnx")
            if not os.path.isfile(model):
                return _fail("nothing staged at " + staging)
            got = sha256_of(model)
            if got != sha:
                shutil.rmtree(staging, ignore_errors=True)
                return _fail("sha256 mismatch on device: expected " + sha + ", got " + got)
            for name in os.listdir(staging):
                with open(os.path.join(staging, name), "rb") as fh:
                    os.fsync(fh.fileno())
            os.rename(staging, final)
            _fsync_dir(versions)
            status = "installed"
        # staging folders of interrupted transfers of this version
        for name in os.listdir(versions):
            if name.startswith(".incoming-" + sha):
                shutil.rmtree(os.path.join(versions, name), ignore_errors=True)
        if activate_now:
            _activate(workdir, sha)
            _drop_lease(workdir, lease)
        return _state(workdir, status=status)


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


def bench(model, parity, providers, threads, warmup, min_runs, min_seconds, max_samples, baseline, blocks):
    """Latency of ``model``; with ``baseline``, both measured interleaved in A B / B A blocks.

    Interleaving puts drift and heat on both models alike; the per-block medians are what
    the host's regression test compares.
    """
    import numpy as np

    session, load_ms = _session(model, providers, threads)
    name = session.get_inputs()[0].name
    batch = np.load(parity, allow_pickle=False)
    feeds = [{name: batch[i : i + 1]} for i in range(len(batch))]
    for i in range(warmup):
        session.run(None, feeds[i % len(feeds)])
    peak_rss_mb = _peak_rss_mb()  # the candidate alone is loaded so far
    outputs = session.run(None, {name: batch})[0]
    device = facts(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(model)))))
    device.pop("ok")
    result = {
        "ok": True,
        "load_ms": load_ms,
        "peak_rss_mb": peak_rss_mb,
        "providers": session.get_providers(),
        "facts": device,
        "parity_outputs": outputs.tolist(),
    }
    if baseline is None:
        result.update(_summary(_single_stream(session, feeds, min_runs, min_seconds), max_samples))
        return result
    base, base_load_ms = _session(baseline, providers, threads)
    for i in range(warmup):
        base.run(None, feeds[i % len(feeds)])
    runs, seconds = -(-min_runs // blocks), min_seconds / blocks
    a, b, a_blocks, b_blocks = [], [], [], []
    pair = ((session, a, a_blocks), (base, b, b_blocks))
    for k in range(blocks):  # A B, B A, A B, ...: neither model always runs first
        for sess, times, medians in pair if k % 2 == 0 else pair[::-1]:
            block = _single_stream(sess, feeds, runs, seconds)
            times.extend(block)
            medians.append(_percentile(sorted(block), 50))
    result.update(_summary(a, max_samples))
    result["block_p50_ms"] = a_blocks
    result["baseline"] = dict(_summary(b, max_samples), load_ms=base_load_ms, block_p50_ms=b_blocks)
    return result


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


def _fail(message):
    return {"ok": False, "error": message}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="agent.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("facts").add_argument("workdir")
    commands = {
        "install": ("workdir", "sha", "staging"),
        "activate": ("workdir", "sha"),
        "rollback": ("workdir",),
        "release": ("workdir",),
    }
    for command, positional in commands.items():
        p = sub.add_parser(command)
        for arg in positional:
            p.add_argument(arg)
        p.add_argument("--lease", default=None)
        p.add_argument("--lock-timeout", type=float, default=60.0)
    sub.choices["install"].add_argument("--activate", action="store_true")
    sub.choices["rollback"].add_argument("--to", default=None)
    p = sub.add_parser("bench")
    p.add_argument("model")
    p.add_argument("parity")
    p.add_argument("--baseline", default=None)
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--providers", default="CPUExecutionProvider")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--min-runs", type=int, default=200)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-samples", type=int, default=5000)
    args = parser.parse_args(argv)
    try:
        if args.command == "facts":
            result = facts(args.workdir)
        elif args.command == "install":
            result = install(
                args.workdir, args.sha, args.staging, args.activate, args.lease, args.lock_timeout
            )
        elif args.command == "activate":
            result = activate(args.workdir, args.sha, args.lease, args.lock_timeout)
        elif args.command == "rollback":
            result = rollback(args.workdir, args.to, args.lease, args.lock_timeout)
        elif args.command == "release":
            result = release(args.workdir, args.lease, args.lock_timeout)
        else:
            result = bench(
                args.model,
                args.parity,
                args.providers.split(","),
                args.threads,
                args.warmup,
                args.min_runs,
                args.min_seconds,
                args.max_samples,
                args.baseline,
                args.blocks,
            )
    except SystemExit as exc:
        result = exc.code if isinstance(exc.code, dict) else _fail(str(exc.code))
    except Exception as exc:
        result = _fail(type(exc).__name__ + ": " + str(exc))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
