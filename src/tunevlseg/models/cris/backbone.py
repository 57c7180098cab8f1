"""CLIP ``ModifiedResNet`` as modified by CRIS: returns C3, C4 and a *spatial* C5.

Mirrors ``model/clip.py`` of the CRIS reference (DerrickWang005/CRIS.pytorch), parameter
names included (``conv1``, ``bn1`` … ``layer1..4``, ``attnpool.{q,k,v,c}_proj``,
``attnpool.positional_embedding``, ``attnpool.connect.{0,1}``), so OpenAI CLIP weights
(``visual.*``) and CRIS checkpoints (``backbone.visual.*``) load unchanged.

CRIS's attention pool drops CLIP's class (mean) token: every spatial token attends to
every spatial token, the positional embedding of the 7×7 grid (CLIP at 224) is bicubic-
interpolated (``align_corners=False``) to the input's grid (13×13 at 416), and the result
is added to a 1×1 conv + BN residual branch of the layer4 output, then ReLU'd — as in
the reference ``AttentionPool2d.forward``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    """CLIP's bottleneck: strides are done by an average pool (anti-aliasing) after conv2."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pool kept spatial (no pooled token) plus CRIS's residual ``connect`` branch."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None):
        super().__init__()
        output_dim = output_dim or embed_dim
        self.spacial_dim = spacial_dim
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads
        self.connect = nn.Sequential(nn.Conv2d(embed_dim, output_dim, 1, stride=1, bias=False),
                                     nn.BatchNorm2d(output_dim))

    def resize_pos_embed(self, height: int, width: int) -> torch.Tensor:
        """Spatial part of the positional embedding (class entry dropped) at (height, width): (H·W, C)."""
        s = self.spacial_dim
        pos = self.positional_embedding[1:]
        if (height, width) == (s, s):
            return pos
        grid = pos.reshape(1, s, s, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        res = self.connect(x)
        tokens = x.flatten(2).transpose(1, 2) + self.resize_pos_embed(h, w).to(x.dtype)  # B, HW, C
        heads = self.num_heads

        def split(t):
            return t.reshape(b, h * w, heads, -1).transpose(1, 2)

        q, k, v = split(self.q_proj(tokens)), split(self.k_proj(tokens)), split(self.v_proj(tokens))
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.c_proj(out.transpose(1, 2).reshape(b, h * w, c))
        out = out.transpose(1, 2).reshape(b, -1, h, w)
        return F.relu(out + res)


class ModifiedResNet(nn.Module):
    """3-conv stem + avgpool, four Bottleneck stages, spatial attention pool.

    ``forward`` returns (C3, C4, C5): layer2 (8·width ch, /8), layer3 (16·width ch, /16) and the
    attention pool output (``output_dim`` ch, /32). ``input_resolution`` is CLIP's pretraining
    resolution (224) and only fixes the size of the stored positional embedding.
    """

    def __init__(self, layers, output_dim: int, heads: int, input_resolution: int = 224, width: int = 64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed_dim = width * 32
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.to(self.conv1.weight.dtype)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer1(x)
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.attnpool(self.layer4(c4))
        return c3, c4, c5
