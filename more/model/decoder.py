"""Segmentation decoder: DeepLab LargeFOV (reference ``model/decoder/conv_head.py``, MORE_SPEC §1.6)."""

from __future__ import annotations

import torch
from torch import nn


class LargeFOV(nn.Module):
    """conv3×3 (dilated, no bias) -> ReLU -> conv3×3 (dilated, no bias) -> ReLU -> conv1×1 (no bias).

    No dropout, no normalisation, PyTorch default init (the reference never calls its ``_init_weights``).

    Args:
        in_channels: D.
        num_classes: output channels, C + 1 (background included).
        channels: hidden width (512).
        dilation: dilation (and padding) of both 3×3 convs (5).
    """

    def __init__(self, in_channels: int, num_classes: int, *, channels: int = 512, dilation: int = 5) -> None:
        super().__init__()
        self.conv6 = nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv7 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv8 = nn.Conv2d(channels, num_classes, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B, C+1, h, w) segmentation logits at feature resolution."""
        x = self.relu(self.conv6(features))  # (B, channels, h, w)
        x = self.relu(self.conv7(x))  # (B, channels, h, w)
        return self.conv8(x)  # (B, C+1, h, w)
