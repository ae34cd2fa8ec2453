"""Release gates on one device's measurement of a candidate: budgets per device group, and
no regression against the release active on that device.

Each gate is a small function chosen by its budget's name (devices.yml ``groups.<g>.budgets``);
a budget left unset is no gate. Every result carries its figure, its limit and its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro_edge.evaluation.gates import GateResult
from kedro_edge.evaluation.regression import regression
from kedro_edge.fleet.inventory import Budgets


def _at_most(name: str, what: str, value: float, limit: float, unit: str) -> GateResult:
    ok = value <= limit
    return GateResult(
        name, ok, value, limit, f"{what} {value:.4g}{unit} {'<=' if ok else '>'} {limit:.4g}{unit}"
    )


def p90_ms(m: dict, limit: float) -> GateResult:
    return _at_most("p90_ms", "p90 latency", m["p90_ms"], limit, " ms")


def peak_rss_mb(m: dict, limit: float) -> GateResult:
    return _at_most("peak_rss_mb", "peak RSS", m["peak_rss_mb"], limit, " MB")


def load_ms(m: dict, limit: float) -> GateResult:
    return _at_most("load_ms", "session load", m["load_ms"], limit, " ms")


def max_abs_diff(m: dict, limit: float) -> GateResult:
    return _at_most("max_abs_diff", "max |device - host| output", m["parity"]["max_abs_diff"], limit, "")


def min_top1_agreement(m: dict, limit: float) -> GateResult:
    share = m["parity"]["top1_agreement"]
    ok = share >= limit
    return GateResult(
        "min_top1_agreement",
        ok,
        share,
        limit,
        f"top-1 agreement with host {share:.3f} {'>=' if ok else '<'} {limit:.3f}",
    )


BUDGET_GATES: dict[str, Callable[[dict, float], GateResult]] = {
    "p90_ms": p90_ms,
    "peak_rss_mb": peak_rss_mb,
    "load_ms": load_ms,
    "min_top1_agreement": min_top1_agreement,
    "max_abs_diff": max_abs_diff,
}


def no_regression(m: dict, alpha: float, tolerance: float) -> GateResult:
    """Candidate vs the active release, measured interleaved in A/B pairs of blocks on this device."""
    base = m.get("baseline")
    if base is None:
        return GateResult("no_regression", True, 0.0, tolerance, "no active release on the device to compare")
    r = regression(m["block_p50_ms"], base["block_p50_ms"], alpha, tolerance)
    verdict = "regression" if r["regressed"] else "no regression"
    reason = (
        f"{verdict}: p50 {m['p50_ms']:.4g} vs {base['p50_ms']:.4g} ms ({r['slowdown']:+.1%}, "
        f"tolerance {tolerance:.0%}; one-sided {r['test']} on {r['pairs']} A/B pairs, "
        f"{r['slower_pairs']} slower: p={r['p_value']:.2g}, alpha {alpha:g})"
    )
    return GateResult("no_regression", not r["regressed"], r["slowdown"], tolerance, reason)


def evaluate(m: dict, budgets: Budgets, regression_cfg: Any) -> list[GateResult]:
    """Every set budget, plus the no-regression gate unless switched off."""
    results = [BUDGET_GATES[k](m, v) for k, v in budgets.model_dump().items() if v is not None]
    if regression_cfg.enabled:
        results.append(no_regression(m, regression_cfg.alpha, regression_cfg.tolerance))
    return results
