"""A multilayer perceptron for feature vectors (N, F), or images flattened to vectors.

Structured pruning removes hidden neurons: rows of one Linear and the matching columns of
the next. The input features and the classes stay.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Linear -> ReLU (-> Dropout) per hidden layer, then a linear classifier.

    Args:
        in_features: inputs per sample (an image counts C*H*W); ``build_model`` fills it in
            from the data. ``None`` defers it to the first forward pass (``nn.LazyLinear``).
        num_classes: classes (filled in from the data).
        hidden: widths of the hidden layers; empty for a linear classifier.
        dropout: after each hidden activation, while training.
    """

    def __init__(
        self,
        in_features: int | None = None,
        num_classes: int = 10,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {list(hidden)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        c_prev = in_features
        for width in hidden:
            layers.append(nn.LazyLinear(width) if c_prev is None else nn.Linear(c_prev, width))
            layers.append(nn.ReLU(inplace=True))
            if dropout:
                layers.append(nn.Dropout(dropout))
            c_prev = int(width)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.LazyLinear(num_classes) if c_prev is None else nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(torch.flatten(x, 1)))
