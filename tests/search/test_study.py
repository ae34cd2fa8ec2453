"""The search on the host: the fastest candidate within budget, every trial recorded, resumable,
extendable, shared by two worker processes, and a budget nobody meets said so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kedro_edge import nodes
from kedro_edge.config import CompressionParams, TrainParams
from kedro_edge.errors import KedroEdgeError
from kedro_edge.search import record
from kedro_edge.search.driver import search

FAST = {"blocks": 2, "min_runs": 10, "min_seconds": 0.0, "warmup": 2}
TRAIN = TrainParams(epochs=1, batch_size=64, lr=0.01)


def params(storage: str, **search_cfg) -> CompressionParams:
    base = {
        "enabled": True, "trials": 4, "batch": 2, "finetune_epochs": 1, "storage": storage,
        "budget": {"max_accuracy_drop": 100.0}, "latency": FAST,
    }  # fmt: skip
    return CompressionParams.model_validate(
        {"search": {**base, **search_cfg}, "quantize": {"calibration_samples": 32}}
    )


@pytest.fixture(scope="module")
def searched(_trained, splits, tmp_path_factory):
    storage = f"journal:{tmp_path_factory.mktemp('study') / 'study.log'}"
    return storage, search(_trained, splits, params(storage), TRAIN, None)


def test_the_choice_is_the_fastest_trial_within_budget_and_is_reported_once_on_test(searched, splits):
    _, rec = searched
    within = [t for t in rec["trials"] if t["within_budget"]]
    assert within and rec["outcome"] == "chosen"
    fastest = min(within, key=lambda t: t["latency"]["ratio"])
    assert rec["chosen"]["trial"] == fastest["number"]
    test = rec["chosen"]["test"]
    assert test["vs_teacher"]["n"] == len(splits.y("test")) and "paired 95% CI" in test["summary"]
    assert rec["chosen"]["latency"]["where"] == "host"  # the chosen model itself, timed on the target
    CompressionParams.model_validate(rec["chosen"]["recipe"])


def test_every_trial_is_in_the_record_with_its_settings_latency_and_fate(searched):
    _, rec = searched
    assert len(rec["trials"]) == 4 and rec["fixed_recipe_trial"] == 0 and rec["trials"][0]["fixed_recipe"]
    for t in rec["trials"]:
        assert t["settings"]["keep"] and t["latency"]["where"] == "host" and t["latency"]["ratio"] > 0
        if t["state"] == "complete":
            assert t["val_accuracy"] is not None and t["shipped_bytes"] < t["onnx_bytes"]
        else:  # ended early: the record says why
            assert t["state"] == "pruned" and t["reason"].startswith(("no faster than", "hopeless"))


def test_the_pareto_plot_draws_from_the_record(searched, tmp_path):
    _, rec = searched
    fig = record.figure(rec)
    fig.savefig(tmp_path / "search.png")
    assert (tmp_path / "search.png").stat().st_size > 10_000


def test_a_rerun_resumes_and_a_larger_trial_count_extends(searched, _trained, splits):
    storage, first = searched
    again = search(_trained, splits, params(storage), TRAIN, None)
    assert again["this_run"]["trials_run"] == 0 and again["study"] == first["study"]
    assert again["chosen"]["trial"] == first["chosen"]["trial"]
    more = search(_trained, splits, params(storage, trials=6), TRAIN, None)
    assert more["this_run"]["trials_run"] == 2 and len(more["trials"]) == 6


def test_the_plan_is_the_chosen_recipe(searched):
    _, rec = searched
    plan = nodes.plan_compression(rec, CompressionParams().model_dump(mode="json"))
    assert plan == CompressionParams.model_validate(rec["chosen"]["recipe"]).model_dump(mode="json")
    off = nodes.plan_compression(record.disabled(), {"search": {"trials": 7}})
    assert off == CompressionParams().model_dump(mode="json")  # search settings are not in a plan


def test_a_budget_no_candidate_meets_is_said_and_recorded(_trained, splits, tmp_path):
    cfg = params(f"journal:{tmp_path / 's.log'}", trials=2, budget={"max_accuracy_drop": 0.0},
                 space={"keep": [0.2, 0.3], "width": [0.5]})  # fmt: skip
    rec = search(_trained, splits, cfg, TRAIN, None)
    assert rec["outcome"] == "no candidate met the budget" and rec["chosen"] is None
    assert len(rec["trials"]) == 2
    with pytest.raises(
        KedroEdgeError, match=r"no candidate within the budget of 0\.0 validation points in 2"
    ):
        nodes.plan_compression(rec, cfg.model_dump(mode="json"))


WORKER = """
import json, sys, torch
from kedro_edge.config import CompressionParams, TrainParams
from kedro_edge.data import Splits, load_digits_arrays, split_arrays
from kedro_edge.search.driver import search
images, labels = load_digits_arrays()
splits = Splits(split_arrays(images[:, None], labels, 0.15, 0.2, seed=0, image_size=None))
teacher = torch.load(sys.argv[1], weights_only=False)
cfg = CompressionParams.model_validate(json.loads(sys.argv[2]))
rec = search(teacher, splits, cfg, TrainParams(epochs=1, batch_size=64, lr=0.01), None)
print(json.dumps({"run": rec["this_run"], "study": rec["study"], "n": len(rec["trials"])}))
"""


def test_two_worker_processes_share_one_study(_trained, tmp_path):
    import torch

    torch.save(_trained, tmp_path / "teacher.pt")
    cfg = params(f"journal:{tmp_path / 'shared.log'}", trials=4, batch=1)
    argv = [
        sys.executable,
        "-c",
        WORKER,
        str(tmp_path / "teacher.pt"),
        json.dumps(cfg.model_dump(mode="json")),
    ]
    workers = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=Path.cwd()) for _ in range(2)]
    out = [json.loads(w.communicate(timeout=600)[0].strip().splitlines()[-1]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert out[0]["study"] == out[1]["study"]
    total = max(o["n"] for o in out)
    # one study: what the two ran adds up to what it holds (separate studies would hold 4 each)
    assert total >= 4 and sum(o["run"]["trials_run"] for o in out) == total


def test_a_storage_password_is_never_recorded():
    from kedro_edge.search.study import storage_of

    shown = storage_of("postgresql://bob:s3cret@db.internal:5432/optuna").shown
    assert "s3cret" not in shown and shown == "postgresql://bob:***@db.internal:5432/optuna"
    assert storage_of("journal:data/study.log").artifacts.name == "study.log.artifacts"
