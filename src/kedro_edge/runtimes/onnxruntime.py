"""The host's ONNX Runtime: sessions, batched prediction, single-stream latency and parity.

Evaluation, mixed precision, the search and deployment all run ONNX graphs through these
functions, so a model is timed and compared the same way wherever it is measured on the host.

Latency is single-stream (batch 1, one query at a time) with a fixed thread count, after a
warm-up, until both a minimum number of runs and a minimum duration are reached (MLPerf's
rule).
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort

from kedro_edge.runtimes.onnx_export import INPUT
from kedro_edge.runtimes.timing import LatencyParams


def session(model: onnx.ModelProto | bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with a fixed intra-op thread count (latency depends on it)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def ort_predict(sess: ort.InferenceSession, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate(
        [sess.run(None, {INPUT: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    )


def latency_ms(sess: ort.InferenceSession, samples: np.ndarray, cfg: LatencyParams) -> np.ndarray:
    """Per-query latencies in ms at batch 1 (warm-up excluded)."""
    feeds = [{INPUT: samples[i : i + 1]} for i in range(len(samples))]
    for i in range(cfg.warmup):
        sess.run(None, feeds[i % len(feeds)])
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < cfg.min_runs or time.perf_counter() - start < cfg.min_seconds:
        t0 = time.perf_counter_ns()
        sess.run(None, feeds[len(times) % len(feeds)])
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return np.asarray(times)


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and max absolute difference between two sets of logits."""
    return {
        "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(reference - candidate).max()),
    }
