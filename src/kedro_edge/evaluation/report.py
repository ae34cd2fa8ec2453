"""What each compression stage bought: paired comparisons, honest warnings, the summary table.

Every stage is compared on the same test images with the teacher (what the release gates
judge) and with the stage before it (what that one step bought or cost). A step that made
the model slower, larger or significantly less accurate is not hidden: it becomes a warning
line and a record in ``compression_metrics.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from itertools import pairwise
from typing import TYPE_CHECKING

from rich.table import Table

from kedro_edge.evaluation import statistics
from kedro_edge.evaluation.params import ValidationParams
from kedro_edge.evaluation.records import (
    TOP1,
    CompressionMetrics,
    Finding,
    FindingKind,
    StageComparison,
    StageFigures,
)

if TYPE_CHECKING:  # annotations only: the hooks print this table without loading torch or ORT
    from kedro_edge.evaluation.stage import StageEvaluation


def _paired(
    reference: StageEvaluation, candidate: StageEvaluation, cfg: ValidationParams, stage: str | None = None
) -> StageComparison:
    metric, robust = cfg.scorer, None
    if reference.robust_scores is not None and candidate.robust_scores is not None:
        robust = metric.paired(
            reference.robust_scores, candidate.robust_scores, cfg.confidence, cfg.bootstrap_resamples
        )
    clean = metric.paired(reference.scores, candidate.scores, cfg.confidence, cfg.bootstrap_resamples)
    return StageComparison(stage=stage, clean=clean, robust=robust)


def compare(evaluations: Mapping[str, StageEvaluation], cfg: ValidationParams) -> dict[str, StageFigures]:
    """Each stage's figures plus ``vs_teacher`` and ``vs_previous`` paired comparisons."""
    names = list(evaluations)
    first = evaluations[names[0]]
    stages = {names[0]: first.figures}
    for previous, name in pairwise(names):
        evaluation = evaluations[name]
        stages[name] = replace(
            evaluation.figures,
            vs_teacher=_paired(first, evaluation, cfg),
            vs_previous=_paired(evaluations[previous], evaluation, cfg, stage=previous),
        )
    return stages


def _significant_loss(comparison: statistics.PairedComparison, alpha: float) -> bool:
    return comparison.drop_points > 0 and comparison.p_value < alpha


def regressions(stages: Mapping[str, StageFigures], cfg: ValidationParams) -> list[Finding]:
    """Where a stage is slower, larger or significantly less accurate than the stage before it.

    Slower: p50 more than ``cfg.slower_tolerance`` above (host timing noise is a few percent).
    Less accurate: a paired loss of the metric with p < 1 - confidence (McNemar for 0/1 scores,
    else Wilcoxon: a drop that could be the luck of the draw is not called one).
    """
    alpha = 1 - cfg.confidence
    found = []
    for name, fig in stages.items():
        if fig.vs_previous is None:
            continue
        prev_name = fig.vs_previous.stage
        prev = stages[prev_name]
        ratio = fig.latency_p50_ms / prev.latency_p50_ms
        if ratio > 1 + cfg.slower_tolerance:
            detail = f"p50 {prev.latency_p50_ms:.3g} -> {fig.latency_p50_ms:.3g} ms ({ratio:.2f}x)"
            found.append(Finding.of(name, prev_name, FindingKind.SLOWER, ratio, detail))
        if fig.size_bytes > prev.size_bytes:
            ratio = fig.size_bytes / prev.size_bytes
            detail = f"{prev.size_bytes:,} -> {fig.size_bytes:,} bytes ({ratio:.2f}x)"
            found.append(Finding.of(name, prev_name, FindingKind.LARGER, ratio, detail))
        for comparison, kind in (
            (fig.vs_previous.clean, FindingKind.LESS_ACCURATE),
            (fig.vs_previous.robust, FindingKind.LESS_ROBUST),
        ):
            if comparison is not None and _significant_loss(comparison, alpha):
                found.append(Finding.of(name, prev_name, kind, comparison.diff_points, comparison.describe()))
    return found


def _pct(value: float, ci: tuple[float, float] | None, scale: float = 100.0) -> str:
    f, g = (".2f", ".1f") if scale == 100 else (".4g", ".3g")
    if ci is None:
        return f"{scale * value:{f}}"
    return f"{scale * value:{f}} [{scale * ci[0]:{g}}, {scale * ci[1]:{g}}]"


def _diff(comparison: statistics.PairedComparison) -> str:
    f = ".2f" if comparison.unit == "points" else ".3g"
    return (
        f"{comparison.diff_points:+{f}} [{comparison.ci_low_points:+{f}}, {comparison.ci_high_points:+{f}}]"
    )


def summary_rows(metrics: CompressionMetrics) -> list[dict[str, str]]:
    """One row of strings per stage: what the summary table prints (and tests read)."""
    stages = metrics.stages
    teacher = next(iter(stages.values()))
    metric = metrics.metric or TOP1
    k, what = metric.scale, metric.what
    col, robust_col = (f"{what} %", "robust %") if metric.percent else (what, f"robust {what}")
    unit = "pts" if metric.percent else metric.unit
    rows = []
    for name, fig in stages.items():
        clean = fig.vs_teacher.clean if fig.vs_teacher else None
        robust = fig.vs_teacher.robust if fig.vs_teacher else None
        shipped = fig.shipped_bytes
        rows.append(
            {
                "stage": name,
                col: _pct(fig.accuracy, fig.accuracy_ci, k),
                f"vs teacher ({unit})": _diff(clean) if clean else "—",
                robust_col: _pct(fig.robust_accuracy, fig.robust_accuracy_ci, k)
                if fig.robust_accuracy is not None
                else "—",
                "robust vs teacher": f"{robust.diff_points:+{'.2f' if metric.percent else '.3g'}}"
                if robust
                else "—",
                "KiB": f"{fig.size_bytes / 1024:,.0f}",
                "shipped KiB": f"{shipped / 1024:,.0f}" if shipped is not None else "—",
                "p50 ms": f"{fig.latency_p50_ms:.3g}",
                "smaller": f"{teacher.size_bytes / fig.size_bytes:.1f}x",
                "shipped smaller": f"{teacher.size_bytes / shipped:.1f}x" if shipped is not None else "—",
                "faster": f"{teacher.latency_p50_ms / fig.latency_p50_ms:.1f}x",
            }
        )
    return rows


def summary_table(metrics: CompressionMetrics) -> Table:
    """The table `kedro run` ends with: the metric ± interval, robust, size, p50, x vs teacher."""
    rows = summary_rows(metrics)
    n = next(iter(metrics.stages.values())).n
    pct = round(100 * metrics.confidence)
    table = Table(title=f"what each stage bought (test n={n}, {pct}% intervals, paired vs teacher)")
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in rows:
        table.add_row(*row.values())
    warnings = [f"[yellow]warning: {finding.message}" for finding in metrics.warnings]
    if warnings:
        table.caption = "\n".join(warnings)
        table.caption_justify = "left"
    return table
