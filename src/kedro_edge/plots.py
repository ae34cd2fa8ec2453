"""Figures people compare: what each compression stage bought."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: pipelines and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def compression_figure(metrics: dict) -> Figure:
    """Left: accuracy vs p50 latency, bubble area ~ file size. Right: size and latency per stage."""
    stages = metrics["stages"]
    names = list(stages)
    acc = [100 * stages[n]["accuracy"] for n in names]
    p50 = [stages[n]["latency_p50_ms"] for n in names]
    kib = [stages[n]["size_bytes"] / 1024 for n in names]
    colors = plt.cm.viridis([i / max(1, len(names) - 1) for i in range(len(names))])

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    left.scatter(p50, acc, s=[30 + 600 * k / max(kib) for k in kib], c=colors, alpha=0.7, edgecolors="k")
    for name, x, y, k in zip(names, p50, acc, kib, strict=True):
        left.annotate(f"{name}\n{k:.0f} KiB", (x, y), textcoords="offset points", xytext=(8, 6), fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("host latency p50, batch 1 (ms, log)")
    left.set_ylabel("test accuracy (%)")
    left.set_title("accuracy vs latency (bubble area ~ size)")
    left.grid(alpha=0.3)

    pos = range(len(names))
    right.bar([p - 0.2 for p in pos], kib, width=0.4, color="tab:blue", label="size (KiB)")
    right.set_yscale("log")
    right.set_ylabel("ONNX size (KiB, log)")
    twin = right.twinx()
    twin.bar([p + 0.2 for p in pos], p50, width=0.4, color="tab:orange", label="p50 (ms)")
    twin.set_yscale("log")
    twin.set_ylabel("p50 latency (ms, log)")
    right.set_xticks(list(pos), names)
    right.set_title("size and latency per stage")
    handles = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    right.legend(handles, ["size (KiB)", "p50 (ms)"], loc="upper right")
    fig.tight_layout()
    return fig
