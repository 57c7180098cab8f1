"""VPT (deep): learned vision tokens appended after the patch tokens at layers 1..d."""

from __future__ import annotations

from torch import nn

from .base import ModelDims, Prompts, PromptLearner, normal_prompt


class VPT(PromptLearner, method="vpt"):
    """``ctx[k]`` (n × vision_width) per depth: 3,072 · d parameters on ViT-B/16 (768 wide)."""


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings=None):
        super().__init__(dims, depth, n_ctx)
        if dims.vision_width is None:
            raise ValueError("VPT needs a transformer vision encoder (this model has no vision tokens)")
        self.ctx = nn.ParameterList(normal_prompt(n_ctx, dims.vision_width) for _ in range(depth))

    def forward(self, image_feature=None) -> Prompts:
        return Prompts(vision=[c.unsqueeze(0) for c in self.ctx])
