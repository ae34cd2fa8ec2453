"""A small encoder-decoder for per-pixel classes: the segmentation task's built-in model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kedro_edge.models.cnn import conv_bn_relu


class SegNet(nn.Module):
    """A U-Net-style encoder-decoder: per width a (strided) conv-BN-ReLU pair down, then up by
    nearest-neighbour upsampling with the encoder's features concatenated (skip connections), and a
    1x1 conv to ``num_classes`` logits per pixel (outputs (N, C, H, W) at the input's size).

    The concatenations couple channels across the network, as the residual additions do in
    ``ResidualCNN``: Torch-Pruning removes the matching input channels of every decoder conv.
    Input sides must be divisible by ``2 ** (len(widths) - 1)``.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 11, widths: Sequence[int] = (24, 48, 96)
    ) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        c_prev = in_channels
        for i, width in enumerate(widths):
            self.down.append(nn.Sequential(conv_bn_relu(c_prev, width, stride=1 if i == 0 else 2),
                                           conv_bn_relu(width, width)))  # fmt: skip
            c_prev = width
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.decode = nn.ModuleList(
            conv_bn_relu(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)  # registered last: the output layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.decode:
            x = block(torch.cat([self.up(x), skips.pop()], dim=1))
        return self.head(x)
