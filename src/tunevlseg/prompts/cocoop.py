"""CoCoOp (deep): text context tokens shifted by a meta-net of the image feature, at layers 1..d."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelDims, Prompts, PromptLearner, normal_prompt


def meta_net(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear(in, h) – ReLU – Linear(h, out, no bias) – LayerNorm(out, no bias): (in + 1)·h + h·out + out parameters."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, out_dim, bias=False),
        nn.LayerNorm(out_dim, bias=False),
    )


class CoCoOp(PromptLearner, method="cocoop"):
    """``text[k] = ctx[k] + meta_net_k(feature)``: the same per-image shift on all n tokens of depth k.

    Hyper-parameters (keyword arguments): ``hidden`` h, the meta-net width (paper: 32, 64, 128);
    ``normalize_feature`` (default True) L2-normalises the image feature first, as the original CoCoOp.

    Trainable parameters per depth, with text width Dt and image feature width F:
    n·Dt + (F + 1)·h + h·Dt + Dt; on CLIPSeg (Dt = F = 512, n = 4): 2,560 + 1,025·h
    (h = 32: 35,360); on CRIS (F = 1024): 2,560 + 1,537·h.
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings: torch.Tensor | None = None,
                 hidden: int = 32, normalize_feature: bool = True):
        super().__init__(dims, depth, n_ctx)
        self.hidden = int(hidden)
        self.normalize_feature = bool(normalize_feature)
        self.ctx = nn.ParameterList(normal_prompt(n_ctx, dims.text_width) for _ in range(depth))
        if init_embeddings is not None:
            self.ctx[0].data.copy_(init_embeddings)
        self.meta_nets = nn.ModuleList(
            meta_net(dims.image_feature_dim, self.hidden, dims.text_width) for _ in range(depth))

    def forward(self, image_feature: torch.Tensor | None) -> Prompts:
        """``image_feature`` (B, F) → ``Prompts.text[k]`` of shape (B, n, Dt)."""
        if image_feature is None:
            raise ValueError("CoCoOp needs the image feature (uses_image_feature = True)")
        feature = image_feature.to(self.ctx[0].dtype)
        if self.normalize_feature:
            feature = F.normalize(feature, dim=-1)
        return Prompts(text=[ctx.unsqueeze(0) + net(feature)[:, None, :]
                             for ctx, net in zip(self.ctx, self.meta_nets)])
