"""Your own model architectures: the place for them in this project, with an example.

Any ``torch.nn.Module`` defined here is chosen by import path, e.g. in
``conf/base/parameters_training.yml``::

    model:
      class_path: pipelines.custom_models.SmallCNN
      kwargs: {width: 16}

or for one run: ``kedro run --params model.class_path=pipelines.custom_models.SmallCNN``
(the old class's ``kwargs`` are then dropped; add ``,model.kwargs.width=8`` to set some).
``kedro run`` puts the project folder on ``sys.path``, so ``pipelines.custom_models`` imports
like any module. The constructor gets ``in_channels`` and ``num_classes`` from the data when
it takes arguments of those names; everything else comes from ``kwargs``.

What the later stages need from an architecture: structured pruning removes channels of
``Conv2d``/``BatchNorm2d``/``Linear`` layers (keep ops that Torch-Pruning can trace: no
hard-coded channel counts in ``forward``); quantization-aware training and ONNX export
handle ``Conv2d``, ``Linear``, ``BatchNorm2d``, ``ReLU`` and pooling.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (the last two strided, doubling the width), then a linear head.

    Args:
        in_channels: image channels (filled in from the data).
        num_classes: classes (filled in from the data).
        width: channels of the first stage.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        c_prev = in_channels
        for i, c in enumerate(widths):
            layers += [
                nn.Conv2d(c_prev, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            c_prev = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
