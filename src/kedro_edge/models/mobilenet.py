"""MobileNetV2 for small images (Sandler et al., 2018), sized for 8x8 to 64x64 inputs.

Inverted residual blocks: a 1x1 expansion, a 3x3 depthwise conv, a 1x1 linear projection
(no activation), and an identity shortcut when the block keeps stride 1 and its width.
The default settings are torchvision's table cut down for 32x32 inputs (a stride-1 stem,
three strided stages, a 256-wide head): about 15 M MACs and 0.4 M parameters at
``width_mult=1.0``, ten classes, one input channel.

For structured pruning the depthwise convs tie each expansion channel to one depthwise
filter (DepGraph removes both), and the shortcuts tie the projections of a stage together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# (expansion t, output channels c, blocks n, stride of the first block s), as in the paper
SMALL_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),  # 32x32
    (6, 24, 2, 2),  # 16x16
    (6, 32, 3, 2),  # 8x8
    (6, 64, 3, 2),  # 4x4
    (6, 96, 2, 1),  # 4x4
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to a multiple of ``divisor``, never more than 10% below it (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_act(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection, plus the input when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = c_in * expand_ratio
        layers: list[nn.Module] = [conv_bn_act(c_in, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [
            conv_bn_act(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for small images; ``settings`` rows are ``[t, c, n, s]`` as in the paper.

    Args:
        in_channels: image channels (filled in from the data by ``build_model``).
        num_classes: classes (filled in from the data).
        width_mult: scales every layer's width (rounded to multiples of ``round_nearest``).
        settings: the inverted-residual stages; ``None`` takes ``SMALL_SETTINGS``.
        stem_channels: width of the first (stride-1) 3x3 conv, before ``width_mult``.
        last_channels: width of the final 1x1 conv before pooling; ``None`` or 0 leaves it out.
        dropout: before the classifier.
        round_nearest: channel counts are multiples of this (8 suits SIMD kernels).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width_mult: float = 1.0,
        settings: Sequence[Sequence[int]] | None = None,
        stem_channels: int = 16,
        last_channels: int | None = 256,
        dropout: float = 0.0,
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        rows = [tuple(row) for row in (SMALL_SETTINGS if settings is None else settings)]
        if not rows or any(len(row) != 4 or min(row) < 1 for row in rows):
            raise ValueError(f"settings must be rows of four positive integers [t, c, n, s], got {rows}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        c_prev = make_divisible(stem_channels * width_mult, round_nearest)
        layers: list[nn.Module] = [conv_bn_act(in_channels, c_prev)]
        for t, c, n, s in rows:
            c_out = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                layers.append(InvertedResidual(c_prev, c_out, s if i == 0 else 1, t))
                c_prev = c_out
        if last_channels:
            head = make_divisible(last_channels * max(1.0, width_mult), round_nearest)
            layers.append(conv_bn_act(c_prev, head, kernel=1))
            c_prev = head
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_prev, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
