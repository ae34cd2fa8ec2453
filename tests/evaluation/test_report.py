"""What each stage bought: paired comparisons, and warnings when a stage made things worse."""

import numpy as np

from kedro_edge.config import ValidationParams
from kedro_edge.evaluation.report import compare, regressions, summary_rows, summary_table
from kedro_edge.evaluation.stage import StageEvaluation
from kedro_edge.evaluation.statistics import accuracy
from tests.stage_figures import compression_metrics, stage_figures

N = 2000


def _stage(wrong: int, p50: float, size: int, robust_wrong: int | None = None) -> StageEvaluation:
    correct = np.ones(N, bool)
    correct[:wrong] = False  # later stages get the same images wrong and then some: nested errors
    robust = None
    if robust_wrong is not None:
        robust = np.ones(N, bool)
        robust[:robust_wrong] = False
    clean = accuracy(correct)
    figures = stage_figures(
        accuracy=clean.accuracy,
        accuracy_ci=(clean.ci_low, clean.ci_high),
        n=N,
        latency_p50_ms=p50,
        size_bytes=size,
        robust_accuracy=None if robust is None else robust.mean(),
    )
    return StageEvaluation(figures, correct, robust)


def _metrics(evaluations):
    cfg = ValidationParams()
    stages = compare(evaluations, cfg)
    return compression_metrics(stages, regressions(stages, cfg))


def test_every_stage_is_compared_paired_with_the_teacher_and_the_stage_before():
    metrics = _metrics(
        {
            "teacher": _stage(100, 2.0, 4000, 300),
            "pruned": _stage(110, 0.8, 1000, 330),
            "int8": _stage(112, 0.3, 300, 340),
        }
    )
    int8 = metrics.stages["int8"]
    assert int8.vs_teacher.clean.diff_points == -0.6  # 12 more of 2000 wrong
    assert int8.vs_teacher.clean.only_reference_right == 12
    assert int8.vs_previous.stage == "pruned"
    assert int8.vs_previous.clean.diff_points == -0.1
    assert int8.vs_teacher.robust.diff_points == -2.0
    assert metrics.stages["teacher"].vs_teacher is None
    assert metrics.warnings[0].stage == "pruned"  # 10 of 10 discordant against: p = 0.002
    assert {w.kind for w in metrics.warnings} == {"less accurate", "less robust"}


def test_a_stage_that_is_slower_larger_or_less_accurate_is_called_out():
    metrics = _metrics({"teacher": _stage(100, 2.0, 4000), "int8": _stage(160, 2.4, 5000)})
    kinds = {w.kind: w.message for w in metrics.warnings}
    assert set(kinds) == {"slower", "larger", "less accurate"}
    assert kinds["slower"] == "stage 'int8' is slower than 'teacher': p50 2 -> 2.4 ms (1.20x)"
    assert "-3.00 points" in kinds["less accurate"] and "n=2000" in kinds["less accurate"]


def test_noise_is_not_called_a_regression():
    # 2 images of 2000 (p = 0.5) and 3% slower (within the 5% tolerance): no warning
    metrics = _metrics({"teacher": _stage(100, 2.0, 4000), "int8": _stage(102, 2.06, 300)})
    assert metrics.warnings == []


def test_the_summary_table_has_one_row_per_stage_with_intervals():
    metrics = _metrics({"teacher": _stage(100, 2.0, 4096, 300), "int8": _stage(112, 0.25, 512, 340)})
    rows = summary_rows(metrics)
    assert [r["stage"] for r in rows] == ["teacher", "int8"]
    assert rows[1]["accuracy %"].startswith("94.40 [")
    assert rows[1]["vs teacher (pts)"].startswith("-0.60 [")
    assert rows[1]["smaller"] == "8.0x" and rows[1]["faster"] == "8.0x"
    assert rows[1]["robust vs teacher"] == "-2.00"
    assert "n=2000" in summary_table(metrics).title
