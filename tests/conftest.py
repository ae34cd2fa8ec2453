"""Shared fixtures: real digits at 8x8, a tiny residual CNN trained for a few epochs."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kedro_edge.config import TrainParams
from kedro_edge.data import Splits, load_digits_arrays, split_arrays
from kedro_edge.models import ResidualCNN
from kedro_edge.models.training import fit
from tests import torchvision_shim

torchvision_shim.install()  # the real torchvision and timm models run in the tests

TINY_WIDTHS = (8, 16)


@pytest.fixture(scope="session")
def splits() -> Splits:
    images, labels = load_digits_arrays()
    return Splits(split_arrays(images[:, None], labels, 0.15, 0.2, seed=0, image_size=None))


@pytest.fixture(scope="session")
def train_params() -> TrainParams:
    return TrainParams(epochs=4, batch_size=64, lr=0.01, patience=10)


@pytest.fixture(scope="session")
def _trained(splits: Splits, train_params: TrainParams) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ResidualCNN(in_channels=1, num_classes=10, widths=TINY_WIDTHS)
    fit(model, splits, epochs=train_params.epochs, batch_size=64, lr=train_params.lr)
    return model.eval()


@pytest.fixture
def teacher(_trained: torch.nn.Module) -> torch.nn.Module:
    """A fresh copy of a small trained model (tests may change it)."""
    return copy.deepcopy(_trained)


@pytest.fixture
def example(splits: Splits) -> torch.Tensor:
    return splits.example()


def conv_out_channels(model: torch.nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def rng_images(n: int = 20, shape=(8, 8)) -> np.ndarray:
    return np.random.default_rng(0).random((n, *shape), dtype=np.float32)


# The SSH fleet tests need Debian's sshd (`scripts/setup.sh --dev` installs it). Outside CI
# they are skipped without it; in CI (CI=true) a missing sshd is a failure, not a skip.
needs_sshd = pytest.mark.skipif(
    not Path("/usr/sbin/sshd").exists() and not os.environ.get("CI"),
    reason="needs openssh-server (scripts/setup.sh --dev)",
)
