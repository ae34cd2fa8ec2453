import pytest

from kedro_edge.config import GateParams
from kedro_edge.errors import GateError
from kedro_edge.gate import enforce, evaluate_gates


def _metrics(teacher_acc=0.99, final_acc=0.985, teacher_size=1000, final_size=100, agree=1.0):
    return {
        "final_stage": "int8",
        "stages": {
            "teacher": {"accuracy": teacher_acc, "size_bytes": teacher_size},
            "int8": {
                "accuracy": final_acc,
                "size_bytes": final_size,
                "torch_vs_onnx": {"top1_agreement": agree},
            },
        },
    }


def test_passing_gates_record_their_figures():
    results = evaluate_gates(_metrics(), GateParams(max_accuracy_drop=1.0, min_size_reduction=8))
    by = {r.gate: r for r in results}
    assert by["max_accuracy_drop"].passed and by["max_accuracy_drop"].value == pytest.approx(0.5)
    assert by["min_size_reduction"].passed and by["min_size_reduction"].value == 10
    enforce([r.to_dict() for r in results])  # no error


@pytest.mark.parametrize(
    ("metrics", "gate"),
    [
        (_metrics(final_acc=0.97), "max_accuracy_drop"),
        (_metrics(final_size=500), "min_size_reduction"),
        (_metrics(agree=0.9), "min_agreement"),
    ],
)
def test_a_violated_gate_refuses_with_one_line(metrics, gate):
    results = [r.to_dict() for r in evaluate_gates(metrics, GateParams())]
    assert [r["gate"] for r in results if not r["passed"]] == [gate]
    with pytest.raises(GateError, match=f"gate '{gate}' refused model.onnx") as err:
        enforce(results)
    assert "\n" not in str(err.value)


def test_null_switches_a_gate_off():
    params = GateParams(max_accuracy_drop=None, min_size_reduction=None, min_agreement=None)
    assert evaluate_gates(_metrics(final_acc=0.1), params) == []
