"""A model's footprint (MACs and parameters, counted by Torch-Pruning) and its output layer.

The bottom of the compression stack: pruning, low-rank, the search and evaluation all count
and protect layers the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn


@dataclass(frozen=True)
class Footprint:
    macs: int
    params: int


def footprint(model: nn.Module, example: torch.Tensor) -> Footprint:
    """MACs and parameter count of ``model`` for one ``example`` input."""
    was_training = model.training
    macs, params = tp.utils.count_ops_and_params(model.eval(), example)
    model.train(was_training)
    return Footprint(int(macs), int(params))


def output_layers(model: nn.Module) -> list[nn.Module]:
    """The last Linear/Conv layer: its outputs are the classes and must keep their number."""
    prunable = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return prunable[-1:]
