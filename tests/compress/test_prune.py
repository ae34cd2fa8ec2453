import copy

import pytest
import torch

from kedro_edge.compress.prune import prune
from kedro_edge.config import PruneParams, TrainParams
from kedro_edge.models.footprint import footprint
from tests.conftest import TINY_WIDTHS, conv_out_channels

FAST = TrainParams(epochs=1, batch_size=64, lr=0.01)


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
def test_structured_pruning_removes_channels_across_residuals(teacher, splits, example, importance):
    cfg = PruneParams(ratio=0.5, steps=2, finetune_epochs=1, importance=importance)
    student, report = prune(teacher, splits, cfg, FAST)

    # channels physically gone, in every conv, including both sides of each residual addition
    before, after = conv_out_channels(teacher), conv_out_channels(student)
    assert all(a < b for a, b in zip(after, before, strict=True))
    assert max(after) <= TINY_WIDTHS[-1] // 2
    # the classes stay
    assert student.classifier.out_features == 10
    # MACs and params down and recorded
    assert footprint(student, example).macs < 0.4 * footprint(teacher, example).macs
    assert report["after"]["macs"] < report["before"]["macs"]
    assert report["after"]["params"] < report["before"]["params"]
    assert [s["step"] for s in report["steps"]] == [1, 2]
    # the model still runs at the data's shape and the teacher is untouched
    assert student(example).shape == (1, 10)
    assert conv_out_channels(teacher) == before


def test_target_macs_reaches_the_target(teacher, splits, example):
    cfg = PruneParams(ratio=None, target_macs=0.3, steps=1, finetune_epochs=0)
    student, report = prune(teacher, splits, cfg, FAST)
    kept = footprint(student, example).macs / footprint(teacher, example).macs
    assert kept <= 0.3 + 0.02
    assert kept > 0.1  # not pruned far past the target


def test_unstructured_zeroes_weights_but_shrinks_nothing(teacher, splits, example):
    cfg = PruneParams(method="unstructured", ratio=0.6, finetune_epochs=1)
    student, report = prune(teacher, splits, cfg, FAST)
    assert report["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert conv_out_channels(student) == conv_out_channels(teacher)
    assert footprint(student, example) == footprint(teacher, example)
    # masks were made permanent: plain parameters, no pruning hooks left
    assert not any(name.endswith("_orig") for name, _ in student.named_parameters())


def test_disabled_pruning_returns_an_equal_copy(teacher, splits):
    student, report = prune(teacher, splits, PruneParams(enabled=False), FAST)
    assert student is not teacher
    assert report["method"] == "none"
    for a, b in zip(student.parameters(), teacher.parameters(), strict=True):
        assert torch.equal(a, b)


def test_finetuning_recovers_accuracy(teacher, splits):
    from kedro_edge.models.training import accuracy

    cfg = PruneParams(ratio=0.5, steps=1, finetune_epochs=0)
    raw, _ = prune(copy.deepcopy(teacher), splits, cfg, FAST)
    tuned, _ = prune(teacher, splits, cfg.model_copy(update={"finetune_epochs": 2}), FAST)
    x, y = splits.x("val"), splits.y("val")
    assert accuracy(tuned, x, y) > accuracy(raw, x, y)


def test_round_to_keeps_multiples_and_never_empties_a_layer(splits, example):
    """round_to: 8 rounds the channels kept down to multiples of 8, but a layer never loses all of
    them (Torch-Pruning's own rounding would leave a 12-channel layer at 50% with none)."""
    from kedro_edge.compress.prune import one_shot
    from kedro_edge.models import ResidualCNN

    torch.manual_seed(0)
    model = ResidualCNN(in_channels=1, num_classes=10, widths=(12, 40))
    before = conv_out_channels(model)
    one_shot(model, example, PruneParams(ratio=0.5, round_to=8, steps=1))
    after = conv_out_channels(model)
    assert after == [8 if b == 12 else 16 for b in before]  # 6 -> 8 kept (not 0); 20 -> 16
    assert model(example).shape == (1, 10)


def test_recovering_from_the_teacher_fine_tunes_on_its_soft_targets(teacher, splits, monkeypatch):
    from kedro_edge.compress import prune as prune_module
    from kedro_edge.models.training import predict

    seen = []
    real = prune_module.finetune
    monkeypatch.setattr(prune_module, "finetune", lambda *a, **kw: (seen.append(kw), real(*a, **kw))[1])
    cfg = PruneParams(ratio=0.5, steps=1, finetune_epochs=1)
    by_labels, _ = prune(teacher, splits, cfg, FAST)
    by_teacher, report = prune(teacher, splits, cfg.model_copy(update={"recover": "teacher"}), FAST)
    assert report["recover"] == "teacher"
    assert seen[0] == {} and seen[1]["targets"].shape == (len(splits.y("train")), 10)
    assert (seen[1]["targets"] == predict(teacher, splits.x("train"))).all()  # the teacher's logits
    # a different loss: different weights from the same pruned start
    assert any(
        not torch.equal(a, b)
        for a, b in zip(by_labels.state_dict().values(), by_teacher.state_dict().values(), strict=True)
    )
