"""Figures people compare: what each compression stage bought."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: pipelines and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

from kedro_edge.evaluation.records import TOP1, MetricInfo  # noqa: E402

if TYPE_CHECKING:
    from kedro_edge.evaluation.records import StageFigures


def _metric_axis(metric: MetricInfo) -> tuple[str, str, str]:
    """(what the axis shows, its unit suffix, the unit of differences) for ``validation.metric``."""
    return metric.what, " (%)" if metric.percent else "", metric.unit


def compression_figure(
    stages: Mapping[str, StageFigures], test_n: int, confidence: float, metric: MetricInfo | None = None
) -> Figure:
    """Left: the metric (with its interval) vs p50 latency, robust hollow, marker area ~
    file size; the legend carries the labels, so stages close together never overlap.
    Right: gains over the teacher. ``test_n`` and ``confidence`` label the metric's axis
    (``metric``: top-1 accuracy when not given)."""
    names = list(stages)
    metric = metric or TOP1
    k = metric.scale
    what, suffix, unit = _metric_axis(metric)
    acc = [k * stages[n].accuracy for n in names]
    p50 = [stages[n].latency_p50_ms for n in names]
    kib = [stages[n].size_bytes / 1024 for n in names]
    colors = plt.cm.viridis([i / max(1, len(names) - 1) for i in range(len(names))])

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 5.4), width_ratios=(1.2, 1, 1))
    low_y: list[float] = []
    for i, name in enumerate(names):
        fig_ = stages[name]
        ci = fig_.accuracy_ci
        err = [[acc[i] - k * ci[0]], [k * ci[1] - acc[i]]]
        area = 40 + 700 * kib[i] / max(kib)
        left.errorbar(p50[i], acc[i], yerr=err, fmt="none", ecolor=colors[i], capsize=4, lw=1.2)
        interval = f"[{k * ci[0]:.3g}, {k * ci[1]:.3g}]"
        label = f"{name}: {acc[i]:.4g}{'%' if suffix else ''} {interval}, {p50[i]:.3g} ms, {kib[i]:,.0f} KiB"
        left.scatter(
            p50[i], acc[i], s=area, color=colors[i], alpha=0.8, edgecolors="k", label=label, zorder=3
        )
        low_y.append(k * ci[0])
        if fig_.robust_accuracy is not None:
            robust = k * fig_.robust_accuracy
            left.scatter(
                p50[i], robust, s=60, facecolors="none", edgecolors=colors[i], linewidths=1.5, zorder=3
            )
            left.plot([p50[i], p50[i]], [robust, acc[i]], color=colors[i], lw=0.6, ls=":")
            low_y.append(robust)
    if any(stages[n].robust_accuracy is not None for n in names):
        left.scatter(
            [],
            [],
            s=60,
            facecolors="none",
            edgecolors="grey",
            label=f"hollow: robust {what} (perturbed test copy)",
        )
    left.set_xscale("log")
    left.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    left.xaxis.set_major_formatter(ScalarFormatter())
    left.xaxis.set_minor_formatter(NullFormatter())
    top, bottom = max(acc), min(low_y)
    spread = max(top - bottom, 1.0 if suffix else 1e-9)
    left.set_ylim(bottom - 0.15 * spread, top + 0.15 * spread)
    left.set_xlim(min(p50) / 1.6, max(p50) * 1.6)
    left.set_xlabel("host latency p50, batch 1 (ms, log scale)")
    n = test_n
    pct = round(100 * confidence)
    left.set_ylabel(
        f"test {what}, ONNX Runtime{suffix}\nn = {n:,} images, {pct}% intervals"
        if n
        else f"test {what}{suffix}"
    )
    left.set_title(f"{what} vs latency (marker area ~ file size)")
    left.grid(alpha=0.3, which="both")
    # labels in a legend below the axes: stages with close figures never write over each other
    legend = left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7.5, frameon=False)
    for handle in legend.legend_handles:
        handle.set_sizes([50])
    _paired_panel(middle, stages, names, colors, f"{what} change vs teacher ({unit})")

    base = stages[names[0]]
    size_gain = [base.size_bytes / stages[n].size_bytes for n in names]
    # shipped: each stage's ONNX lzma-compressed, as a release sends it, vs the teacher's ONNX file
    shipped = [
        stages[n].size_bytes if stages[n].shipped_bytes is None else stages[n].shipped_bytes for n in names
    ]
    shipped_gain = [base.size_bytes / s for s in shipped]
    speed_gain = [base.latency_p50_ms / stages[n].latency_p50_ms for n in names]
    pos = range(len(names))
    for offset, gains, label, color in (
        (-0.27, size_gain, "smaller ONNX (x)", "tab:blue"),
        (0, shipped_gain, "fewer bytes shipped, lzma (x)", "tab:green"),
        (0.27, speed_gain, "faster p50 (x)", "tab:orange"),
    ):
        bars = right.bar([p + offset for p in pos], gains, width=0.27, label=label, color=color)
        right.bar_label(bars, fmt="%.1fx", fontsize=8, padding=2)
    right.set_xticks(list(pos), names)
    right.set_ylabel(f"gain over {names[0]} (x)")
    right.set_title(f"what each stage bought, relative to {names[0]}")
    right.axhline(1, color="grey", lw=0.8)
    right.legend(loc="upper left")
    right.margins(y=0.15)
    fig.tight_layout()
    return fig


def _paired_panel(ax, stages: Mapping[str, StageFigures], names: list[str], colors, ylabel: str) -> None:
    """Each stage's paired change of the metric vs the teacher, clean and robust, with its interval."""
    rows = [(i, n) for i, n in enumerate(names) if stages[n].vs_teacher is not None]
    for offset, kind, marker in ((-0.12, "clean", "o"), (0.12, "robust", "s")):
        for i, name in rows:
            comp = getattr(stages[name].vs_teacher, kind)
            if comp is None:
                continue
            d = comp.diff_points
            err = [[d - comp.ci_low_points], [comp.ci_high_points - d]]
            ax.errorbar(
                i + offset,
                d,
                yerr=err,
                fmt=marker,
                color=colors[i],
                capsize=4,
                mfc=colors[i] if kind == "clean" else "none",
                label=kind if i == rows[0][0] else None,
            )
            ax.annotate(f"{d:+.3g}", (i + offset, d), textcoords="offset points", xytext=(8, -3), fontsize=7)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel(ylabel)
    n = next((stages[n].vs_teacher.clean.n for _, n in rows), None)
    ax.set_title(f"paired change vs teacher, same {n:,} images (95% CI)" if n else "paired change vs teacher")
    ax.grid(alpha=0.3, axis="y")
    if rows:
        ax.legend(loc="lower left", fontsize=8, title="filled: clean, hollow: robust", title_fontsize=7)


def robustness_curve_figure(record: Mapping) -> Figure:
    """Left: each stage's accuracy against the perturbation's severity (0 = clean), with its
    interval. Right: each stage's paired change vs the reference on the same perturbed images;
    the dashed line marks the severity the gate judges."""
    names = list(record["stages"])
    k = record.get("scale", 100.0)
    what, suffix, unit = _metric_axis(MetricInfo.named(record.get("metric", "top1"), k))
    colors = plt.cm.viridis([i / max(1, len(names) - 1) for i in range(len(names))])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    if not record["severities"]:
        for ax in (left, right):
            ax.text(
                0.5,
                0.5,
                "robustness off (validation.robustness.enabled)",
                ha="center",
                transform=ax.transAxes,
            )
        return fig
    for i, name in enumerate(names):
        pts = record["stages"][name]
        sev = [p["severity"] for p in pts]
        acc = [k * p["accuracy"] for p in pts]
        err = [[a - k * p["accuracy_ci"][0] for a, p in zip(acc, pts, strict=True)],
               [k * p["accuracy_ci"][1] - a for a, p in zip(acc, pts, strict=True)]]  # fmt: skip
        left.errorbar(sev, acc, yerr=err, marker="o", capsize=3, color=colors[i], label=name)
        paired = [(p["severity"], p["vs_reference"]) for p in pts if p["vs_reference"]]
        if paired:
            d = [v["diff_points"] for _, v in paired]
            right.errorbar(
                [s_ + 0.015 * i for s_, _ in paired],
                d,
                yerr=[
                    [x - v["ci_low_points"] for x, (_, v) in zip(d, paired, strict=True)],
                    [v["ci_high_points"] - x for x, (_, v) in zip(d, paired, strict=True)],
                ],  # fmt: skip
                marker="o",
                capsize=3,
                color=colors[i],
                label=name,
            )
    for ax in (left, right):
        ax.axvline(record["gate_severity"], color="grey", ls="--", lw=0.8)
        ax.set_xlabel(f"severity (× the configured {' + '.join(record['perturbations'])}; 0 = clean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    pct = round(100 * record["confidence"])
    left.set_ylabel(f"test {what}{suffix}, {pct}% CI, n = {record['n']:,}")
    left.set_title(f"{what} as the input degrades")
    right.axhline(0, color="grey", lw=0.8)
    right.set_ylabel(f"change vs {record['reference']} ({unit}, paired {pct}% CI)")
    right.set_title(f"margin against {record['reference']} on the same perturbed images")
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
