"""CRIS's multi-modal FPN (``model/layers.py: FPN``), names as in the reference.

C5 (projected) is multiplied by the projected sentence feature, fused top-down with C4 and
C3 (C3 average-pooled to /16), the three scales aggregated at /16 and refined by a CoordConv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_layer(in_dim: int, out_dim: int, kernel_size: int = 1, padding: int = 0, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, kernel_size, stride, padding, bias=False),
                         nn.BatchNorm2d(out_dim), nn.ReLU(True))


def linear_layer(in_dim: int, out_dim: int, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim, bias), nn.BatchNorm1d(out_dim), nn.ReLU(True))


class CoordConv(nn.Module):
    """Concatenate x and y coordinates in [-1, 1] as two channels, then conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1, stride: int = 1):
        super().__init__()
        self.conv1 = conv_layer(in_channels + 2, out_channels, kernel_size, padding, stride)

    @staticmethod
    def add_coord(x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        coord = torch.stack([xx, yy])[None].expand(b, -1, -1, -1)
        return torch.cat([x, coord], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.add_coord(x))


class FPN(nn.Module):
    """(C3, C4, C5), sentence feature → fused visual feature (out_channels[1], H/16, W/16)."""

    def __init__(self, in_channels=(512, 1024, 1024), out_channels=(256, 512, 1024)):
        super().__init__()
        self.txt_proj = linear_layer(in_channels[2], out_channels[2])
        self.f1_v_proj = conv_layer(in_channels[2], out_channels[2], 1, 0)
        self.norm_layer = nn.Sequential(nn.BatchNorm2d(out_channels[2]), nn.ReLU(True))
        self.f2_v_proj = conv_layer(in_channels[1], out_channels[1], 3, 1)
        self.f2_cat = conv_layer(out_channels[2] + out_channels[1], out_channels[1], 1, 0)
        self.f3_v_proj = conv_layer(in_channels[0], out_channels[0], 3, 1)
        self.f3_cat = conv_layer(out_channels[0] + out_channels[1], out_channels[1], 1, 0)
        self.f4_proj5 = conv_layer(out_channels[2], out_channels[1], 3, 1)
        self.f4_proj4 = conv_layer(out_channels[1], out_channels[1], 3, 1)
        self.f4_proj3 = conv_layer(out_channels[1], out_channels[1], 3, 1)
        self.aggr = conv_layer(3 * out_channels[1], out_channels[1], 1, 0)
        self.coordconv = nn.Sequential(CoordConv(out_channels[1], out_channels[1], 3, 1),
                                       conv_layer(out_channels[1], out_channels[1], 3, 1))

    def forward(self, imgs, state: torch.Tensor) -> torch.Tensor:
        v3, v4, v5 = imgs
        state = self.txt_proj(state)[:, :, None, None]
        f5 = self.norm_layer(self.f1_v_proj(v5) * state)
        f4 = self.f2_v_proj(v4)
        f5_ = F.interpolate(f5, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        f4 = self.f2_cat(torch.cat([f4, f5_], dim=1))
        f3 = F.avg_pool2d(self.f3_v_proj(v3), 2, 2)
        f3 = self.f3_cat(torch.cat([f3, f4], dim=1))
        fq5 = self.f4_proj5(f5)
        fq4 = self.f4_proj4(f4)
        fq3 = self.f4_proj3(f3)
        fq5 = F.interpolate(fq5, size=fq4.shape[-2:], mode="bilinear", align_corners=False)
        fq = self.aggr(torch.cat([fq3, fq4, fq5], dim=1))
        return self.coordconv(fq)
