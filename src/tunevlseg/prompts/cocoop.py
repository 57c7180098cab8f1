"""CoCoOp (deep): text context tokens shifted by a meta-net of the image feature, at layers 1..d."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelDims, Prompts, PromptLearner, TextContextMixin, normal_prompt
from .projections import lora, mlp

PROJECTIONS = ("mlp", "lora")


def meta_net(in_dim: int, hidden: int, out_dim: int, projection: str = "mlp",
             first_layer_init: str = "default") -> nn.Sequential:
    """``mlp``: Linear(in, h) – ReLU – Linear(h, out, no bias) – LayerNorm(out, no bias):
    (in + 1)·h + h·out + out parameters. ``lora``: Linear(in, h, no bias) – Linear(h, out, no bias) –
    LayerNorm(out, no bias): in·h + h·out + out (the reference's ``use_lora_proj``)."""
    if projection == "mlp":
        return mlp(in_dim, hidden, out_dim, linear_bias=False, norm_bias=False, first_layer_init=first_layer_init)
    if projection == "lora":
        return lora(in_dim, hidden, out_dim, norm_bias=False)
    raise ValueError(f"CoCoOp: unknown projection '{projection}'; use one of {', '.join(PROJECTIONS)}")


class CoCoOp(TextContextMixin, PromptLearner, method="cocoop"):
    """``text[k] = ctx[k] + meta_net_k(feature)``: the same per-image shift on all n tokens of depth k.

    Hyper-parameters (keyword arguments): ``hidden`` h, the meta-net width (default 64, the
    reference's; paper: 32, 64, 128); ``projection`` ``"mlp"`` (default) or ``"lora"``;
    ``normalize_feature`` (default True) L2-normalises the image feature first, as the original
    CoCoOp (the reference: False); ``first_layer_init`` ``"default"`` or ``"kaiming"`` (the
    reference's, for the MLP's hidden layer); ``init_from_text`` (``TextContextMixin``).

    Trainable parameters per depth, with text width Dt and image feature width F:
    mlp n·Dt + (F + 1)·h + h·Dt + Dt, lora n·Dt + F·h + h·Dt + Dt; on CLIPSeg (Dt = F = 512,
    n = 4): mlp 2,560 + 1,025·h (h = 32: 35,360), lora 2,560 + 1,024·h; on CRIS (F = 1024):
    mlp 2,560 + 1,537·h, lora 2,560 + 1,536·h.
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings: torch.Tensor | None = None,
                 hidden: int = 64, projection: str = "mlp", normalize_feature: bool = True,
                 first_layer_init: str = "default", init_from_text: bool = True):
        super().__init__(dims, depth, n_ctx)
        self.hidden = int(hidden)
        self.projection = str(projection)
        self.normalize_feature = bool(normalize_feature)
        self.first_layer_init = str(first_layer_init)
        self.ctx = nn.ParameterList(normal_prompt(n_ctx, dims.text_width) for _ in range(depth))
        self._init_text_context(init_embeddings, init_from_text)
        self.meta_nets = nn.ModuleList(
            meta_net(dims.image_feature_dim, self.hidden, dims.text_width, self.projection, self.first_layer_init)
            for _ in range(depth))

    def forward(self, image_feature: torch.Tensor | None) -> Prompts:
        """``image_feature`` (B, F) → ``Prompts.text[k]`` of shape (B, n, Dt)."""
        if image_feature is None:
            raise ValueError("CoCoOp needs the image feature (uses_image_feature = True)")
        feature = image_feature.to(self.ctx[0].dtype)
        if self.normalize_feature:
            feature = F.normalize(feature, dim=-1)
        return Prompts(text=[ctx.unsqueeze(0) + net(feature)[:, None, :]
                             for ctx, net in zip(self.ctx, self.meta_nets)])
