"""Model architectures: the built-in reference CNN and a factory for any ``nn.Module``.

``build_model`` takes a class by import path (``package.module.Class``) with keyword
arguments from parameters, so a user's own architecture needs no code in this package.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence

import torch
from torch import nn

from kedro_edge.config import ModelSpec
from kedro_edge.errors import ConfigError


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (ResNet basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ResidualCNN(nn.Module):
    """Reference CNN: a stem, then per width a (strided) conv-BN-ReLU and a residual block.

    The residual shortcuts couple channels across layers: exactly what structured pruning
    must handle (DepGraph removes the same channels on both sides of every addition).
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (48, 96, 192)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(in_channels, widths[0])]
        c_prev = widths[0]
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(conv_bn_relu(c_prev, width, stride=2))
            layers.append(ResidualBlock(width))
            c_prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def import_class(path: str, key: str) -> type:
    """Import ``package.module.Class``; a ``ConfigError`` naming ``key`` if that fails."""
    module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"parameter '{key}': cannot import '{path}' ({exc})") from None
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ConfigError(f"parameter '{key}': '{path}' is not a torch.nn.Module class")
    return cls


def build_model(spec: ModelSpec, in_channels: int, num_classes: int, key: str = "model") -> nn.Module:
    """Instantiate ``spec``; ``in_channels``/``num_classes`` are filled in when the class takes them."""
    cls = import_class(spec.class_path, f"{key}.class_path")
    kwargs = dict(spec.kwargs)
    accepted = inspect.signature(cls).parameters
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if name in accepted and name not in kwargs:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"parameter '{key}.kwargs': {spec.class_path}: {exc}") from None
