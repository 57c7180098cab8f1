"""CoOp (deep): learned text context tokens at layers 1..d."""

from __future__ import annotations

import torch
from torch import nn

from .base import ModelDims, Prompts, PromptLearner, TextContextMixin, normal_prompt


class CoOp(TextContextMixin, PromptLearner, method="coop"):
    """``ctx[k]`` (n × text_width) per depth; depth 0 may start from a phrase's word embeddings.

    Option: ``init_from_text`` (``TextContextMixin``). Trainable parameters: n · text_width · d
    (2,048 · d on CLIP's 512-wide text tower).
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings: torch.Tensor | None = None,
                 init_from_text: bool = True):
        super().__init__(dims, depth, n_ctx)
        self.ctx = nn.ParameterList(normal_prompt(n_ctx, dims.text_width) for _ in range(depth))
        self._init_text_context(init_embeddings, init_from_text)

    def forward(self, image_feature=None) -> Prompts:
        return Prompts(text=[c.unsqueeze(0) for c in self.ctx])
