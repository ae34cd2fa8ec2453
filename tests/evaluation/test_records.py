"""The typed records read the committed reports and write back exactly the same JSON."""

from __future__ import annotations

import copy
import json

import pytest

from kedro_edge.errors import RecordError
from kedro_edge.evaluation.records import CompressionMetrics, FindingKind, StageFigures
from kedro_edge.nodes.validation import stage_table
from tests.pipelines.project import ROOT

REPORTS = ROOT / "data" / "08_reporting"


def _committed(name: str) -> dict:
    return json.loads((REPORTS / name).read_text())


def _same_json(written: object, committed: object) -> None:
    assert written == committed
    assert json.dumps(written, indent=2) == json.dumps(committed, indent=2)  # key order too


def test_the_committed_metrics_read_and_write_back_unchanged():
    committed = _committed("compression_metrics.json")
    metrics = CompressionMetrics.from_json(committed)
    _same_json(metrics.to_json(), committed)
    # and read through attributes, not keys
    assert metrics.final is metrics.stages[metrics.final_stage]
    assert metrics.final.vs_previous.stage == list(metrics.stages)[-2]
    assert all(w.kind in FindingKind for w in metrics.warnings)
    assert metrics.passed == all(g.passed for g in metrics.gates)


def test_the_validated_model_figures_and_stage_table_keep_their_shape():
    validated = _committed("validated_model.json")
    _same_json(StageFigures.from_json(validated["figures"]).to_json(), validated["figures"])
    metrics = _committed("compression_metrics.json")
    _same_json(CompressionMetrics.from_json(metrics).final.to_json(), validated["figures"])
    _same_json(stage_table(metrics), _committed("compression_stages.json"))


def test_optional_figures_are_left_out_not_null():
    first = next(iter(_committed("compression_metrics.json")["stages"].values()))
    figures = StageFigures.from_json(first)
    assert figures.vs_teacher is None and "vs_teacher" not in figures.to_json()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            ("stages", "teacher", "latency_p50_ms"),
            "compression_metrics.stages.teacher: missing key 'latency_p50_ms'",
        ),
        (("passed",), "compression_metrics: missing key 'passed'"),
        (("gates", 0, "limit"), r"compression_metrics.gates\[0\]: missing key 'limit'"),
    ],
)
def test_a_record_missing_a_key_fails_naming_it(path, message):
    broken = copy.deepcopy(_committed("compression_metrics.json"))
    where = broken
    for part in path[:-1]:
        where = where[part]
    del where[path[-1]]
    with pytest.raises(RecordError, match=f"^{message}$"):
        CompressionMetrics.from_json(broken)


def test_an_unknown_key_or_kind_fails_naming_it():
    broken = copy.deepcopy(_committed("compression_metrics.json"))
    broken["stages"]["int8"]["vs_teacher"]["clean"]["p_vaule"] = 0.5
    with pytest.raises(RecordError, match=r"stages.int8.vs_teacher.clean: unknown key 'p_vaule'"):
        CompressionMetrics.from_json(broken)
    broken = copy.deepcopy(_committed("compression_metrics.json"))
    warning = {"stage": "int8", "previous": "clustered", "kind": "worse", "value": 1.1, "message": "..."}
    broken["warnings"] = [warning]
    with pytest.raises(RecordError, match=r"warnings\[0\].kind: 'worse' is not one of 'slower'"):
        CompressionMetrics.from_json(broken)
