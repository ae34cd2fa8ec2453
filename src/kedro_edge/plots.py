"""Figures people compare: what each compression stage bought."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: pipelines and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402


def compression_figure(metrics: dict) -> Figure:
    """Left: accuracy vs p50 latency, bubble area ~ file size. Right: gains over the teacher."""
    stages = metrics["stages"]
    names = list(stages)
    acc = [100 * stages[n]["accuracy"] for n in names]
    p50 = [stages[n]["latency_p50_ms"] for n in names]
    kib = [stages[n]["size_bytes"] / 1024 for n in names]
    colors = plt.cm.viridis([i / max(1, len(names) - 1) for i in range(len(names))])

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    left.scatter(p50, acc, s=[40 + 900 * k / max(kib) for k in kib], c=colors, alpha=0.75, edgecolors="k")
    for name, x, y, k in zip(names, p50, acc, kib, strict=True):
        left.annotate(
            f"{name}\n{x:.3g} ms, {k:,.0f} KiB",
            (x, y),
            textcoords="offset points",
            xytext=(0, -28),
            ha="center",
            fontsize=8,
        )
    left.set_xscale("log")
    left.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    left.xaxis.set_major_formatter(ScalarFormatter())
    left.xaxis.set_minor_formatter(NullFormatter())
    spread = max(max(acc) - min(acc), 0.5)
    left.set_ylim(min(acc) - 0.8 * spread, max(acc) + 0.3 * spread)
    left.set_xlim(min(p50) / 1.6, max(p50) * 1.6)
    left.set_xlabel("host latency p50, batch 1 (ms, log scale)")
    left.set_ylabel("test accuracy, ONNX Runtime (%)")
    left.set_title("accuracy vs latency (bubble area ~ file size)")
    left.grid(alpha=0.3, which="both")

    base = stages[names[0]]
    size_gain = [base["size_bytes"] / stages[n]["size_bytes"] for n in names]
    speed_gain = [base["latency_p50_ms"] / stages[n]["latency_p50_ms"] for n in names]
    pos = range(len(names))
    for offset, gains, label, color in (
        (-0.2, size_gain, "smaller (x)", "tab:blue"),
        (0.2, speed_gain, "faster p50 (x)", "tab:orange"),
    ):
        bars = right.bar([p + offset for p in pos], gains, width=0.4, label=label, color=color)
        right.bar_label(bars, fmt="%.1fx", fontsize=8, padding=2)
    right.set_xticks(list(pos), names)
    right.set_ylabel(f"gain over {names[0]} (x)")
    right.set_title(f"what each stage bought, relative to {names[0]}")
    right.axhline(1, color="grey", lw=0.8)
    right.legend(loc="upper left")
    right.margins(y=0.15)
    fig.tight_layout()
    return fig


def device_latency_figure(report: dict) -> Figure:
    """Each device's on-device latency distribution (box: p25-p75, whiskers: p5-p95); where the
    candidate was measured against the active release, that one is drawn below it in grey."""
    ok = [d for d in report["devices"] if d["status"] == "ok" and d.get("samples_ms")]
    failed = [d["device"] for d in report["devices"] if d["status"] == "failed"]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * max(1, len(ok))))
    if ok:
        style = {"vert": False, "whis": (5, 95), "showfliers": False}
        ax.boxplot(
            [d["samples_ms"] for d in ok], tick_labels=[f"{d['device']} ({d['group']})" for d in ok], **style
        )
        current = [(i, d["baseline"]["samples_ms"]) for i, d in enumerate(ok, 1) if d.get("baseline")]
        if current:
            ax.boxplot(
                [s for _, s in current],
                positions=[i - 0.3 for i, _ in current],
                widths=0.25,
                boxprops={"color": "grey"},
                medianprops={"color": "grey"},
                manage_ticks=False,
                **style,
            )
            ax.plot([], [], color="grey", label="current release")
            ax.legend(loc="lower right", fontsize=7)
        for i, d in enumerate(ok, start=1):
            ax.annotate(
                f"p50 {d['p50_ms']:.3g}  p90 {d['p90_ms']:.3g} ms",
                (d["p90_ms"], i),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=7,
            )
    ax.set_xlabel("latency per query on the device, batch 1 (ms)")
    sha = report.get("model", {}).get("sha256", "")[:12]
    title = f"on-device latency of model {sha}"
    if failed:
        title += f"\nfailed: {', '.join(failed[:6])}{' ...' if len(failed) > 6 else ''}"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
