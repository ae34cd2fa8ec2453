"""Release gates on compression figures: each a small function chosen by its parameter name.

A gate returns a ``GateResult`` (figures and reason) instead of raising, so every result is
written to the report before ``enforce`` fails the run with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from kedro_edge.config import GateParams
from kedro_edge.errors import GateError


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    value: float
    limit: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _final(metrics: dict) -> dict:
    return metrics["stages"][metrics["final_stage"]]


def max_accuracy_drop(metrics: dict, limit: float) -> GateResult:
    """Final model's test accuracy may be at most ``limit`` points below the teacher's."""
    drop = 100 * (metrics["stages"]["teacher"]["accuracy"] - _final(metrics)["accuracy"])
    ok = drop <= limit
    return GateResult(
        "max_accuracy_drop",
        ok,
        drop,
        limit,
        f"accuracy drop {drop:.2f} points {'<=' if ok else '>'} {limit:.2f}",
    )


def min_size_reduction(metrics: dict, limit: float) -> GateResult:
    """teacher.onnx must be at least ``limit`` times the size of model.onnx."""
    factor = metrics["stages"]["teacher"]["size_bytes"] / _final(metrics)["size_bytes"]
    ok = factor >= limit
    return GateResult(
        "min_size_reduction",
        ok,
        factor,
        limit,
        f"size reduced {factor:.1f}x {'>=' if ok else '<'} {limit:.1f}x",
    )


def min_agreement(metrics: dict, limit: float) -> GateResult:
    """model.onnx must predict the same class as its torch module on this share of test images."""
    share = _final(metrics)["torch_vs_onnx"]["top1_agreement"]
    ok = share >= limit
    return GateResult(
        "min_agreement",
        ok,
        share,
        limit,
        f"torch/ONNX top-1 agreement {share:.3f} {'>=' if ok else '<'} {limit:.3f}",
    )


GATES: dict[str, Callable[[dict, float], GateResult]] = {
    "max_accuracy_drop": max_accuracy_drop,
    "min_size_reduction": min_size_reduction,
    "min_agreement": min_agreement,
}


def evaluate_gates(metrics: dict, params: GateParams) -> list[GateResult]:
    """Every gate whose limit is set (``null`` switches a gate off)."""
    limits = params.model_dump()
    return [GATES[name](metrics, limit) for name, limit in limits.items() if limit is not None]


def enforce(results: list[dict], artifact: str = "model.onnx") -> None:
    """Raise ``GateError`` naming the first refused gate."""
    refused = [r for r in results if not r["passed"]]
    if refused:
        more = f" (+{len(refused) - 1} more)" if len(refused) > 1 else ""
        raise GateError(f"gate '{refused[0]['gate']}' refused {artifact}: {refused[0]['reason']}{more}")
