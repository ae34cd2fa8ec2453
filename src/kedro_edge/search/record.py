"""What a search leaves behind: ``search.json`` (every trial, the choice and why) and ``search.png``.

The choice is made on the validation split only; the chosen model is then reported once on
the test split, paired against the teacher on the same images, with its interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from kedro_edge.search import trial as cand
from kedro_edge.search.study import Context, feasible, finished, load_graph
from kedro_edge.search.target import sha256

if TYPE_CHECKING:
    from kedro_edge.evaluation.metrics import Metric


def trial_entry(t: FrozenTrial, budget: float) -> dict[str, Any]:
    a = t.user_attrs
    drop = a.get("val_drop_points")
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "fixed_recipe": bool(a.get("fixed_recipe") is True),
        "settings": a.get("settings"),
        "val_accuracy": a.get("val_accuracy"),
        "val_drop_points": drop,
        "within_budget": t.state == TrialState.COMPLETE and drop is not None and drop <= budget,
        "latency": a.get("latency"),
        "macs": a.get("macs"),
        "params": a.get("params"),
        **(a.get("sizes") or {}),
        "reason": a.get("reason"),
    }


def choose(ctx: Context, trials: list[FrozenTrial], confidence: float = 0.95) -> dict[str, Any] | None:
    """The fastest trial within budget: its graph re-timed on the target and reported once on test."""
    ok = feasible(trials, ctx.cfg.search.budget.limit)
    if not ok:
        return None
    chosen = ok[0]
    graph = load_graph(ctx.storage, chosen)
    confirmed = ctx.target.measure([graph])[0]
    metric = ctx.metric
    teacher_test = cand.scores(ctx.target.reference, ctx.splits, "test", metric)
    chosen_test = cand.scores(graph, ctx.splits, "test", metric)
    test = metric.paired(teacher_test, chosen_test, confidence)
    return {
        "trial": chosen.number,
        "settings": chosen.user_attrs["settings"],
        "recipe": chosen.user_attrs["recipe"],
        "val_accuracy": chosen.user_attrs["val_accuracy"],
        "val_drop_points": chosen.user_attrs["val_drop_points"],
        "latency": dict(confirmed, timed="the trial's INT8 model after fine-tuning"),
        "test": {
            "accuracy": _interval(metric, chosen_test, confidence),
            "teacher_accuracy": _interval(metric, teacher_test, confidence),
            "vs_teacher": test.to_dict(),
            "summary": test.describe(),
        },
        **cand.sizes(graph),
    }


def _interval(metric: Metric, scores: np.ndarray, confidence: float) -> dict[str, float]:
    """The metric's mean over ``scores`` with its interval: the keys a top-1 record always had
    (``n``, ``correct``, ``accuracy``, ``ci_low``, ``ci_high``, ``confidence``); ``correct`` only
    where scores are 0/1."""
    mean, low, high = metric.interval(scores, confidence)
    out = {"n": len(scores), "accuracy": mean, "ci_low": low, "ci_high": high, "confidence": confidence}
    if metric.binary:
        out["correct"] = int(scores.sum())
    return out


def build(ctx: Context, study: Any, run: dict[str, Any], study_name: str) -> dict[str, Any]:
    """The whole record: settings of the search, every trial of the study, the choice."""
    s = ctx.cfg.search
    trials = finished(study)
    chosen = choose(ctx, trials)
    recipe = next((t.number for t in trials if t.user_attrs.get("fixed_recipe") is True), None)
    return {
        "enabled": True,
        "study": study_name,
        "storage": ctx.storage.shown,
        "target": {"name": s.target, "where": ctx.target.where},
        "budget": s.budget.model_dump(),
        "reference": {"model": "the FP32 teacher's ONNX", "sha256": sha256(ctx.target.reference)},
        "teacher_val_accuracy": ctx.teacher_val_accuracy,
        "n_val": int(len(ctx.splits.y("val"))),
        "stages": ctx.stage_names,
        "this_run": run,
        "fixed_recipe_trial": recipe,
        "outcome": "chosen" if chosen else "no candidate met the budget",
        "chosen": chosen,
        "trials": [trial_entry(t, s.budget.limit) for t in trials],
        "metric": ctx.metric.name,
    }


def disabled() -> dict[str, Any]:
    return {
        "enabled": False,
        "outcome": "search off (compression.search.enabled: false): the recipe as configured",
    }


def figure(record: dict[str, Any]) -> Figure:
    """Validation accuracy against latency on the target: every trial, the Pareto front within
    reach, the budget, the chosen point and the fixed recipe's."""
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    if not record.get("enabled"):
        ax.text(0.5, 0.5, record["outcome"], ha="center", va="center", wrap=True)
        ax.set_axis_off()
        return fig
    done = [t for t in record["trials"] if t["val_accuracy"] is not None and t["latency"]]
    limit = record["budget"].get("max_metric_drop") or record["budget"]["max_accuracy_drop"]
    floor = 100 * record["teacher_val_accuracy"] - limit
    for within, colour, label in ((False, "0.6", "over budget"), (True, "tab:blue", "within budget")):
        pts = [t for t in done if t["within_budget"] == within]
        ax.scatter(
            [t["latency"]["ratio"] for t in pts],
            [100 * t["val_accuracy"] for t in pts],
            c=colour,
            s=22,
            label=label,
        )
    front = _pareto(done)
    if front:
        ax.plot(
            [t["latency"]["ratio"] for t in front],
            [100 * t["val_accuracy"] for t in front],
            c="tab:blue",
            lw=1,
        )
    ended = [t for t in record["trials"] if t["state"] == "pruned" and t["latency"]]
    if ended:
        ax.scatter(
            [t["latency"]["ratio"] for t in ended], [floor] * len(ended), marker="|", c="0.4", s=60,
            label="ended early (latency shown at the budget line)",
        )  # fmt: skip
    ax.axhline(
        floor,
        ls="--",
        c="tab:red",
        lw=1,
        label=f"budget: teacher - {limit} pts",
    )
    recipe = next((t for t in done if t["fixed_recipe"]), None)
    if recipe:
        ax.scatter(recipe["latency"]["ratio"], 100 * recipe["val_accuracy"], marker="D", s=70, c="tab:orange",
                   label=f"fixed recipe (#{recipe['number']})", zorder=3)  # fmt: skip
    chosen = record.get("chosen")
    if chosen:
        ax.scatter(chosen["latency"]["ratio"], 100 * chosen["val_accuracy"], marker="*", s=220, c="tab:green",
                   label=f"chosen (#{chosen['trial']})", zorder=4)  # fmt: skip
    ax.set_xlabel(f"p50 latency / FP32 teacher, measured on {record['target']['where']}")
    ax.set_ylabel(f"INT8 validation accuracy, % (n={record['n_val']})")
    ax.set_title(f"Search: {len(record['trials'])} trials, {record['outcome']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _pareto(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials no other is both faster and more accurate than, fastest first."""
    front, best = [], -1.0
    for t in sorted(trials, key=lambda t: (t["latency"]["ratio"], -t["val_accuracy"])):
        if t["val_accuracy"] > best:
            front.append(t)
            best = t["val_accuracy"]
    return front
