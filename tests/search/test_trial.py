"""One trial's candidate: pruned as its settings say, fine-tuned with the recipe's distillation,
clustered only when the space searches k."""

from __future__ import annotations

import onnx
import pytest

from kedro_edge.compress.cluster import distinct_values_per_channel
from kedro_edge.config import CompressionParams, TrainParams
from kedro_edge.models.training import predict
from kedro_edge.search import trial as cand
from kedro_edge.search.space import Settings, stages

TRAIN = TrainParams(epochs=1, batch_size=64, lr=0.01)
CFG = CompressionParams.model_validate(
    {"quantize": {"calibration_samples": 32}, "cluster": {"min_weights": 1}}
)


@pytest.fixture
def built(teacher, splits):
    keep = {s.name: 0.5 for s in stages(teacher, splits.example())}
    return cand.build(teacher, splits, Settings(keep=keep, cluster_k=4), CFG)


def test_a_trial_is_clustered_only_when_the_space_searches_k(built, splits):
    cand.finish(built, splits, CFG, TRAIN, clustered=False)
    unclustered = distinct_values_per_channel(onnx.load_from_string(built.onnx))
    cand.finish(built, splits, CFG, TRAIN, clustered=True)
    clustered = distinct_values_per_channel(onnx.load_from_string(built.onnx))
    assert max(unclustered.values()) > 4  # unsearched: the recipe clusters after the search
    assert len(clustered) == len(unclustered) and max(clustered.values()) <= 4


def test_a_trials_fine_tune_distils_from_the_teacher_and_a_hopeless_one_stops(built, teacher, splits):
    logits = predict(teacher, splits.x("train"))
    before = cand.scores(built.onnx, splits).mean()
    assert cand.finetune(built, splits, CFG, TRAIN, 2, give_up_below=0.0, teacher_logits=logits)
    cand.finish(built, splits, CFG, TRAIN, clustered=False)
    assert cand.scores(built.onnx, splits).mean() > before  # half the channels gone, then recovered
    assert not cand.finetune(built, splits, CFG, TRAIN, 2, give_up_below=1.01, teacher_logits=logits)
    assert "val_accuracy_after_1_epoch" in built.notes
