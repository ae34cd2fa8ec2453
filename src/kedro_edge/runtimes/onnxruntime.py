"""The host's ONNX Runtime: sessions, batched prediction, single-stream latency and parity.

Evaluation, mixed precision, the search and deployment open sessions, predict and compare
outputs through these functions; evaluation and mixed precision time models with its one loop
(``kedro_edge.runtimes.timing`` says how). The search's latency figures are the agent's own
``measure`` (run in this process when the target is ``host``), so they compare with a device's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from kedro_edge.runtimes import input_contract
from kedro_edge.runtimes.onnx_export import INPUT
from kedro_edge.runtimes.timing import TimingSpec


def session(model: onnx.ModelProto | bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with a fixed intra-op thread count (latency depends on it; 0: ORT's default,
    every core, for predictions that are not timed: the outputs are the same)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def ort_predict(sess: ort.InferenceSession, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for prepared inputs ``x`` (an array or a ``StoredImages`` view), a batch at a time (a
    baked model is fed the pixels they came from)."""
    return np.concatenate(
        [
            sess.run(None, {INPUT: input_contract.feed(sess, np.asarray(x[i : i + batch_size]))})[0]
            for i in range(0, len(x), batch_size)
        ]
    )


def latency_ms(sess: ort.InferenceSession, samples: np.ndarray, spec: TimingSpec) -> np.ndarray:
    """Per-query latencies in ms at batch 1 (warm-up excluded)."""
    return interleaved_ms([sess], samples, spec.warmup, spec.min_runs, spec.min_seconds)[0]


def interleaved_ms(
    sessions: Sequence[ort.InferenceSession],
    samples: np.ndarray,
    warmup: int,
    min_runs: int,
    min_seconds: float,
) -> list[np.ndarray]:
    """Per-query latencies in ms of each session, at batch 1, one query each in turn.

    The order of the turn flips every round, so no session always runs first. The queries
    cycle through ``samples``; the first ``warmup`` rounds are not timed, then rounds run until
    both ``min_runs`` and ``min_seconds`` are reached.
    """
    per_session = [input_contract.feed(sess, samples) for sess in sessions]
    feeds = [[{INPUT: s[i : i + 1]} for i in range(len(samples))] for s in per_session]
    forward, backward = list(enumerate(sessions)), list(enumerate(sessions))[::-1]
    for run in range(warmup):
        for k, sess in forward if run % 2 == 0 else backward:
            sess.run(None, feeds[k][run % len(samples)])
    times: list[list[float]] = [[] for _ in sessions]
    start, run = time.perf_counter(), warmup
    while run - warmup < min_runs or time.perf_counter() - start < min_seconds:
        for k, sess in forward if run % 2 == 0 else backward:
            t0 = time.perf_counter_ns()
            sess.run(None, feeds[k][run % len(samples)])
            times[k].append((time.perf_counter_ns() - t0) / 1e6)
        run += 1
    return [np.asarray(t) for t in times]


def parity(reference: np.ndarray, outputs: np.ndarray | list) -> dict[str, Any]:
    """Top-1 agreement and max absolute difference of ``outputs`` against ``reference`` logits.

    Used for torch vs ONNX Runtime (validation) and device vs host (deployment). ``outputs`` as
    a list (a device's JSON answer) is read as float32; of another shape, they agree on nothing
    and ``shape`` says theirs.
    """
    got = outputs if isinstance(outputs, np.ndarray) else np.asarray(outputs, dtype=np.float32)
    if got.shape != reference.shape:
        return {"top1_agreement": 0.0, "max_abs_diff": float("inf"), "shape": list(got.shape)}
    return {
        "top1_agreement": float((reference.argmax(1) == got.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(reference - got).max()),
    }
