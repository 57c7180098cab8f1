"""VPT (deep): learned vision tokens appended after the patch tokens at layers 1..d."""

from __future__ import annotations

from torch import nn

from .base import ModelDims, Prompts, VisionPromptLearner, normal_prompt


class VPT(VisionPromptLearner, method="vpt"):
    """``ctx[k]`` (n × vision_width) per depth: 3,072 · d parameters on ViT-B/16 (768 wide).

    Options: ``prompts_in_decoder``, ``decoder_sees_next_prompt`` (``VisionPromptLearner``).
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings=None, **vision_options):
        super().__init__(dims, depth, n_ctx, **vision_options)
        self.ctx = nn.ParameterList(normal_prompt(n_ctx, dims.vision_width) for _ in range(depth))

    def forward(self, image_feature=None) -> Prompts:
        return self.prompts(None, [c.unsqueeze(0) for c in self.ctx])
