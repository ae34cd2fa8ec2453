"""What each compression stage bought: paired comparisons, honest warnings, the summary table.

Every stage is compared on the same test images with the teacher (what the release gates
judge) and with the stage before it (what that one step bought or cost). A step that made
the model slower, larger or significantly less accurate is not hidden: it becomes a warning
line and a record in ``compression_metrics.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from kedro_edge.evaluation import statistics
from kedro_edge.evaluation.params import ValidationParams

if TYPE_CHECKING:  # annotations only: the hooks print this table without loading torch or ORT
    from kedro_edge.evaluation.stage import StageEvaluation


def _paired(reference: StageEvaluation, candidate: StageEvaluation, cfg: ValidationParams) -> dict[str, Any]:
    out = {
        "clean": statistics.paired(
            reference.correct, candidate.correct, cfg.confidence, cfg.bootstrap_resamples
        )
    }
    if reference.robust_correct is not None and candidate.robust_correct is not None:
        out["robust"] = statistics.paired(
            reference.robust_correct, candidate.robust_correct, cfg.confidence, cfg.bootstrap_resamples
        )
    return {k: v.to_dict() for k, v in out.items()}


def compare(evaluations: dict[str, StageEvaluation], cfg: ValidationParams) -> dict[str, dict[str, Any]]:
    """Each stage's figures plus ``vs_teacher`` and ``vs_previous`` paired comparisons."""
    names = list(evaluations)
    stages: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        figures = dict(evaluations[name].figures)
        if i > 0:
            figures["vs_teacher"] = _paired(evaluations[names[0]], evaluations[name], cfg)
            figures["vs_previous"] = {
                "stage": names[i - 1],
                **_paired(evaluations[names[i - 1]], evaluations[name], cfg),
            }
        stages[name] = figures
    return stages


def _significant_loss(comparison: dict[str, Any], alpha: float) -> bool:
    return comparison["diff_points"] < 0 and comparison["p_value"] < alpha


def regressions(stages: dict[str, dict[str, Any]], cfg: ValidationParams) -> list[dict[str, Any]]:
    """Where a stage is slower, larger or significantly less accurate than the stage before it.

    Slower: p50 more than ``cfg.slower_tolerance`` above (host timing noise is a few percent).
    Less accurate: a paired loss with McNemar p < 1 - confidence (a drop that could be the
    luck of the draw is not called one).
    """
    alpha = 1 - cfg.confidence
    found = []
    for name, fig in stages.items():
        prev_name = fig.get("vs_previous", {}).get("stage")
        if prev_name is None:
            continue
        prev = stages[prev_name]
        ratio = fig["latency_p50_ms"] / prev["latency_p50_ms"]
        if ratio > 1 + cfg.slower_tolerance:
            found.append(
                _finding(
                    name,
                    prev_name,
                    "slower",
                    ratio,
                    f"p50 {prev['latency_p50_ms']:.3g} -> {fig['latency_p50_ms']:.3g} ms ({ratio:.2f}x)",
                )
            )
        if fig["size_bytes"] > prev["size_bytes"]:
            ratio = fig["size_bytes"] / prev["size_bytes"]
            found.append(
                _finding(
                    name,
                    prev_name,
                    "larger",
                    ratio,
                    f"{prev['size_bytes']:,} -> {fig['size_bytes']:,} bytes ({ratio:.2f}x)",
                )
            )
        for kind, label in (("clean", "less accurate"), ("robust", "less robust")):
            comparison = fig["vs_previous"].get(kind)
            if comparison and _significant_loss(comparison, alpha):
                found.append(
                    _finding(
                        name, prev_name, label, comparison["diff_points"], statistics.describe(comparison)
                    )
                )
    return found


def _finding(stage: str, previous: str, kind: str, value: float, detail: str) -> dict[str, Any]:
    return {
        "stage": stage,
        "previous": previous,
        "kind": kind,
        "value": value,
        "message": f"stage '{stage}' is {kind} than '{previous}': {detail}",
    }


def _pct(value: float, ci: list[float] | None) -> str:
    if ci is None:
        return f"{100 * value:.2f}"
    return f"{100 * value:.2f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _diff(comparison: dict[str, Any]) -> str:
    return (
        f"{comparison['diff_points']:+.2f} "
        f"[{comparison['ci_low_points']:+.2f}, {comparison['ci_high_points']:+.2f}]"
    )


def summary_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """One row of strings per stage: what the summary table prints (and tests read)."""
    stages = metrics["stages"]
    teacher = next(iter(stages.values()))
    rows = []
    for name, fig in stages.items():
        clean = fig.get("vs_teacher", {}).get("clean")
        robust = fig.get("vs_teacher", {}).get("robust")
        rows.append(
            {
                "stage": name,
                "accuracy %": _pct(fig["accuracy"], fig.get("accuracy_ci")),
                "vs teacher (pts)": _diff(clean) if clean else "—",
                "robust %": _pct(fig["robust_accuracy"], fig.get("robust_accuracy_ci"))
                if "robust_accuracy" in fig
                else "—",
                "robust vs teacher": f"{robust['diff_points']:+.2f}" if robust else "—",
                "KiB": f"{fig['size_bytes'] / 1024:,.0f}",
                "shipped KiB": f"{fig['shipped_bytes'] / 1024:,.0f}" if "shipped_bytes" in fig else "—",
                "p50 ms": f"{fig['latency_p50_ms']:.3g}",
                "smaller": f"{teacher['size_bytes'] / fig['size_bytes']:.1f}x",
                "shipped smaller": f"{teacher['size_bytes'] / fig['shipped_bytes']:.1f}x"
                if "shipped_bytes" in fig
                else "—",
                "faster": f"{teacher['latency_p50_ms'] / fig['latency_p50_ms']:.1f}x",
            }
        )
    return rows


def summary_table(metrics: dict[str, Any]) -> Table:
    """The table `kedro run` ends with: accuracy ± interval, robust accuracy, size, p50, x vs teacher."""
    rows = summary_rows(metrics)
    n = next(iter(metrics["stages"].values())).get("n")
    pct = round(100 * metrics.get("confidence", 0.95))
    table = Table(title=f"what each stage bought (test n={n}, {pct}% intervals, paired vs teacher)")
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in rows:
        table.add_row(*row.values())
    warnings = [f"[yellow]warning: {finding['message']}" for finding in metrics.get("warnings", [])]
    if warnings:
        table.caption = "\n".join(warnings)
        table.caption_justify = "left"
    return table
