"""Release gates on compression figures: each a small function chosen by its parameter name.

A gate returns a ``GateResult`` (figures and reason) instead of raising, so every result is
written to the report before ``enforce`` fails the run with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from kedro_edge.compress.registry import REFERENCE
from kedro_edge.errors import GateError
from kedro_edge.evaluation import statistics
from kedro_edge.schema import Strict

if TYPE_CHECKING:  # records import GateResult from here
    from kedro_edge.evaluation.records import StageFigures
    from kedro_edge.evaluation.statistics import PairedComparison


ACCURACY_GATES = ("max_accuracy_drop", "max_robust_accuracy_drop")  # top-1 only

# (reference stage, final stage, limit, all gate parameters) -> result
Gate = Callable[["StageFigures", "StageFigures", float, "GateParams"], "GateResult"]


class GateParams(Strict):
    # points of test accuracy the final model may lose against the teacher (paired, same images)
    max_accuracy_drop: float | None = Field(1.0, ge=0)
    # the same on the perturbed copy of the test split (validation.robustness)
    max_robust_accuracy_drop: float | None = Field(2.0, ge=0)
    # the same for validation.metric, in its units (points for shares; a rise of an error is a drop)
    max_metric_drop: float | None = Field(None, ge=0)
    max_robust_metric_drop: float | None = Field(None, ge=0)
    # upper_bound: the drop's paired upper confidence bound must be within the limit (the model
    # is shown to be no worse than that: a non-inferiority test); point: the point estimate only
    accuracy_decision: Literal["upper_bound", "point"] = "upper_bound"
    min_size_reduction: float | None = Field(4.0, ge=1)  # teacher.onnx bytes / model.onnx bytes
    min_agreement: float | None = Field(0.98, ge=0, le=1)  # torch vs ONNX top-1, final model
    # share of test images right for only one of teacher and final model, assumed before training
    # to say whether the test split is large enough for the drop budgets (measured 1-6 % here)
    planning_discordance: float = Field(0.03, gt=0, lt=1)


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    value: float
    limit: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _drop_gate(gate: str, comparison: PairedComparison, limit: float, decision: str, what: str) -> GateResult:
    """Refuse when the paired accuracy drop (teacher -> final model) exceeds ``limit`` points.

    With ``decision='upper_bound'`` the drop's upper confidence bound must be within the limit:
    the model is shown to lose at most ``limit`` points, not merely estimated to.
    """
    drop, (low, high) = comparison.drop_points, comparison.drop_interval
    value = high if decision == "upper_bound" else drop
    ok = value <= limit
    pct = round(100 * comparison.confidence)
    f = ".2f" if comparison.unit == "points" else ".4g"
    judged = f"upper {pct}% bound {high:{f}}" if decision == "upper_bound" else f"drop {drop:{f}}"
    reason = (
        f"{what} drop {drop:{f}} {comparison.unit}, paired {pct}% CI [{low:{f}}, {high:{f}}], "
        f"{comparison.test} p={comparison.p_value:.3g}, n={comparison.n}: "
        f"{judged} {'<=' if ok else '>'} {limit:{f}}"
    )
    discordance = (comparison.only_reference_right + comparison.only_candidate_right) / comparison.n
    binary = comparison.test == "McNemar"
    if binary and not ok and decision == "upper_bound" and discordance > 0 and (high - low) / 2 > limit > 0:
        needed = statistics.images_needed(limit, discordance, comparison.confidence)
        reason += f" (the interval alone is wider than the budget: it needs about {needed:,} images)"
    return GateResult(gate, ok, value, limit, reason)


def sample_size_warnings(n: int, params: GateParams, confidence: float, metric: str = "top1") -> list[str]:
    """One line per drop gate that ``n`` test images cannot pass even at no loss: the paired
    interval's half-width at ``params.planning_discordance`` is wider than its budget. Said before
    training, so the user can grow the test split instead of learning it from a refusal.

    Planned for top-1 (0/1 scores, where the discordant share sets the width); another metric's
    width depends on the spread of its per-sample differences, known only once models exist."""
    if params.accuracy_decision != "upper_bound" or metric != "top1":
        return []
    half = statistics.paired_half_width(n, params.planning_discordance, confidence)
    lines = []
    for gate in (
        "max_accuracy_drop",
        "max_robust_accuracy_drop",
        "max_metric_drop",
        "max_robust_metric_drop",
    ):
        budget = getattr(params, gate)
        if budget is not None and half >= budget > 0:  # a 0 budget is no n's to pass: the user chose it
            needed = statistics.images_needed(budget, params.planning_discordance, confidence)
            lines.append(
                f"n = {n:,} test images give ±{half:.2f} points (paired {round(100 * confidence)}%, if "
                f"{100 * params.planning_discordance:g}% of images change their answer: "
                f"validation.gates.planning_discordance); the {budget:g}-point validation.gates.{gate} "
                f"budget needs about {needed:,}: grow data.test_fraction or the data, or raise the budget"
            )
    return lines


def _drop_judge(gate: str, copy: Literal["clean", "robust"], what: str) -> Gate:
    """The gate ``gate``: the final model's paired drop against the teacher on the ``copy`` of the
    test split (clean, or the perturbed one) may be at most its limit."""

    def judge(reference: StageFigures, final: StageFigures, limit: float, params: GateParams) -> GateResult:
        comparison = getattr(final.vs_teacher, copy)
        return _drop_gate(gate, comparison, limit, params.accuracy_decision, what)

    judge.__name__ = gate
    return judge


def min_size_reduction(
    reference: StageFigures, final: StageFigures, limit: float, params: GateParams
) -> GateResult:
    """teacher.onnx must be at least ``limit`` times the size of model.onnx."""
    factor = reference.size_bytes / final.size_bytes
    ok = factor >= limit
    return GateResult(
        "min_size_reduction",
        ok,
        factor,
        limit,
        f"size reduced {factor:.1f}x {'>=' if ok else '<'} {limit:.1f}x",
    )


def min_agreement(
    reference: StageFigures, final: StageFigures, limit: float, params: GateParams
) -> GateResult:
    """model.onnx must predict the same class as its torch module on this share of test images."""
    share = final.torch_vs_onnx.top1_agreement
    ok = share >= limit
    return GateResult(
        "min_agreement",
        ok,
        share,
        limit,
        f"torch/ONNX top-1 agreement {share:.3f} {'>=' if ok else '<'} {limit:.3f}",
    )


GATES: dict[str, Gate] = {
    # top-1 accuracy, in points (validation.metric: top1)
    "max_accuracy_drop": _drop_judge("max_accuracy_drop", "clean", "accuracy"),
    "max_robust_accuracy_drop": _drop_judge("max_robust_accuracy_drop", "robust", "robust accuracy"),
    # validation.metric, in its units
    "max_metric_drop": _drop_judge("max_metric_drop", "clean", "metric"),
    "max_robust_metric_drop": _drop_judge("max_robust_metric_drop", "robust", "robust metric"),
    "min_size_reduction": min_size_reduction,
    "min_agreement": min_agreement,
}


def evaluate_gates(
    stages: Mapping[str, StageFigures], final_stage: str, params: GateParams, metric: str = "top1"
) -> list[GateResult]:
    """Every gate whose limit is set (``null`` switches a gate off), ``final_stage`` judged
    against the reference stage; the accuracy-named gates only when ``metric`` is top-1."""
    reference, final = stages[REFERENCE], stages[final_stage]
    limits = {name: getattr(params, name) for name in GATES}
    robust = ("max_robust_accuracy_drop", "max_robust_metric_drop")
    if metric != "top1":
        for name in ACCURACY_GATES:
            limits[name] = None
    if final.vs_teacher is None or final.vs_teacher.robust is None:
        for name in robust:  # robustness evaluation switched off
            limits[name] = None
    if final.vs_teacher is None:  # the teacher is final
        for name in ("max_accuracy_drop", "max_metric_drop", *robust):
            limits[name] = None
    return [
        GATES[name](reference, final, limit, params) for name, limit in limits.items() if limit is not None
    ]


def enforce(results: list[GateResult], artifact: str = "model.onnx") -> None:
    """Raise ``GateError`` naming the first refused gate."""
    refused = [r for r in results if not r.passed]
    if refused:
        more = f" (+{len(refused) - 1} more)" if len(refused) > 1 else ""
        raise GateError(f"gate '{refused[0].gate}' refused {artifact}: {refused[0].reason}{more}")
