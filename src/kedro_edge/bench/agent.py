#!/usr/bin/env python3
"""kedro-edge device agent: one self-contained file that runs ON the device.

Shipped to ``<workdir>/agent/<sha256>.py`` and run with the device's own interpreter
(Python >= 3.8). ``facts`` and ``install`` need only the standard library; ``bench`` needs
numpy and onnxruntime. Every command prints one JSON object on stdout. It imports nothing
of kedro-edge: the device needs none of the controller's packages.

    agent.py facts   WORKDIR
    agent.py install WORKDIR SHA256 STAGING [--activate] [--lock-timeout S]
    agent.py bench   MODEL PARITY [--providers P,..] [--threads N] [--warmup N]
                     [--min-runs N] [--min-seconds S] [--max-samples N]
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

VERSIONS, CURRENT, PREVIOUS, LOCK = "versions", "current", "previous", ".lock"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def facts(workdir):
    """What this device is: architecture, CPUs, memory, free disk, Python and onnxruntime."""
    os.makedirs(workdir, exist_ok=True)
    disk = shutil.disk_usage(workdir)
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


def install(workdir, sha, staging, activate, lock_timeout):
    """Verify the staged model's sha256, move it to versions/<sha>, optionally make it current."""
    versions = os.path.join(workdir, VERSIONS)
    final = os.path.join(versions, sha)
    with locked(workdir, lock_timeout):
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
        if activate:
            current = _target(os.path.join(workdir, CURRENT))
            if current != sha:
                if current is not None:
                    _swap_link(workdir, PREVIOUS, os.path.join(VERSIONS, current))
                _swap_link(workdir, CURRENT, os.path.join(VERSIONS, sha))
                _fsync_dir(workdir)
        return {
            "ok": True,
            "status": status,
            "current": _target(os.path.join(workdir, CURRENT)),
            "previous": _target(os.path.join(workdir, PREVIOUS)),
        }


def _percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def bench(model, parity, providers, threads, warmup, min_runs, min_seconds, max_samples):
    """Single-stream latency (one query at a time until both a count and a duration are met)."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    session = ort.InferenceSession(model, opts, providers=providers)
    load_ms = (time.perf_counter() - t0) * 1000
    name = session.get_inputs()[0].name
    batch = np.load(parity, allow_pickle=False)
    feeds = [{name: batch[i : i + 1]} for i in range(len(batch))]
    for i in range(warmup):
        session.run(None, feeds[i % len(feeds)])
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        feed = feeds[len(times) % len(feeds)]
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1000)
    outputs = session.run(None, {name: batch})[0]
    ordered = sorted(times)
    mean = sum(times) / len(times)
    std = (sum((t - mean) ** 2 for t in times) / len(times)) ** 0.5
    step = max(1, len(times) // max_samples)
    device = facts(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(model)))))
    device.pop("ok")
    return {
        "ok": True,
        "runs": len(times),
        "p50_ms": _percentile(ordered, 50),
        "p90_ms": _percentile(ordered, 90),
        "p99_ms": _percentile(ordered, 99),
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "load_ms": load_ms,
        "peak_rss_mb": _peak_rss_mb(),
        "providers": session.get_providers(),
        "facts": device,
        "samples_ms": times[::step],
        "parity_outputs": outputs.tolist(),
    }


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
    p = sub.add_parser("install")
    p.add_argument("workdir")
    p.add_argument("sha")
    p.add_argument("staging")
    p.add_argument("--activate", action="store_true")
    p.add_argument("--lock-timeout", type=float, default=60.0)
    p = sub.add_parser("bench")
    p.add_argument("model")
    p.add_argument("parity")
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
            result = install(args.workdir, args.sha, args.staging, args.activate, args.lock_timeout)
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
