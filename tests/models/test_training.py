import torch

from kedro_edge.models import ResidualCNN
from kedro_edge.models.training import accuracy, fit


def _train(splits, seed, epochs=2):
    torch.manual_seed(seed)
    model = ResidualCNN(widths=(4, 8))
    result = fit(model, splits, epochs=epochs, batch_size=32, lr=0.01, seed=seed)
    return model, result


def test_same_seed_same_weights(splits):
    a, _ = _train(splits, seed=3)
    b, _ = _train(splits, seed=3)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_training_learns(splits):
    model, result = _train(splits, seed=0, epochs=6)
    assert result.best_val_accuracy > 0.8
    assert accuracy(model, splits.x("test"), splits.y("test")) > 0.8


def test_early_stopping_stops_when_validation_stalls(splits):
    # lr=0 and no BatchNorm: nothing can improve, so patience=2 stops after 2 of 10 epochs
    frozen = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    result = fit(frozen, splits, epochs=10, batch_size=128, lr=0.0, patience=2)
    assert result.epochs_run == 2


def test_best_weights_are_restored(splits):
    model, result = _train(splits, seed=0)
    best = max(h["val_accuracy"] for h in result.history)
    assert accuracy(model, splits.x("val"), splits.y("val")) == best


def test_the_test_split_never_influences_training(splits):
    """Choices (early stopping, best epoch) use validation only: garbage test data, same weights."""
    from kedro_edge.data import Splits

    poisoned = dict(splits.arrays)
    poisoned["x_test"] = poisoned["x_test"][::-1] * 0 + 7.0
    poisoned["y_test"] = (poisoned["y_test"] + 1) % 10
    a, result_a = _train(splits, seed=1, epochs=3)
    b, result_b = _train(Splits(poisoned), seed=1, epochs=3)
    assert result_a.history == result_b.history
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_onecycle_warms_up_then_anneals_per_batch_and_learns(splits):
    """training.schedule: onecycle steps the learning rate every batch: it rises over the first 15%
    of the steps to lr, then falls to ~0; the per-epoch cosine falls from the first epoch on."""
    torch.manual_seed(0)
    model = ResidualCNN(widths=(4, 8))
    result = fit(model, splits, epochs=8, batch_size=32, lr=0.01, schedule="onecycle")
    lrs = [h["lr"] for h in result.history]  # each epoch's last
    assert lrs[0] < lrs[1] <= 0.01  # still warming up after the first of eight epochs (12.5% < 15%)
    assert lrs[1:] == sorted(lrs[1:], reverse=True) and lrs[-1] < 1e-5
    assert result.best_val_accuracy > 0.8
    _, cosine = _train(splits, seed=0, epochs=3)
    falls = [h["lr"] for h in cosine.history]
    assert falls == sorted(falls, reverse=True) and falls[0] < 0.01
