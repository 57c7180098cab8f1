"""CRIS's text-to-pixel projector (``model/layers.py: Projector``).

Visual branch: ×2 bilinear, conv3×3 (2·in_dim), ×2 bilinear, conv3×3 (in_dim), conv1×1 —
26×26 → 104×104 at 416 input. Text branch: Linear(word_dim, in_dim·k·k + 1) gives a per-
sample k×k kernel and bias, applied as a grouped convolution → (B, 1, 104, 104).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .neck import conv_layer


class Projector(nn.Module):
    def __init__(self, word_dim: int = 1024, in_dim: int = 256, kernel_size: int = 3):
        super().__init__()
        self.in_dim = in_dim
        self.kernel_size = kernel_size
        self.vis = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear"),
            conv_layer(in_dim * 2, in_dim * 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            conv_layer(in_dim * 2, in_dim, 3, padding=1),
            nn.Conv2d(in_dim, in_dim, 1))
        self.txt = nn.Linear(word_dim, in_dim * kernel_size * kernel_size + 1)

    def forward(self, x: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 2·in_dim, h, w), ``word`` (B, word_dim) → logits (B, 1, 4h, 4w)."""
        x = self.vis(x)
        b, c, h, w = x.shape
        x = x.reshape(1, b * c, h, w)
        word = self.txt(word)
        weight = word[:, :-1].reshape(b, c, self.kernel_size, self.kernel_size)
        bias = word[:, -1]
        out = F.conv2d(x, weight, bias=bias, padding=self.kernel_size // 2, groups=b)
        return out.transpose(0, 1)
