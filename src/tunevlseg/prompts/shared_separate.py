"""Shared Separate (deep): one latent per depth, projected separately to text and vision prompts.

``init_embeddings`` (the word embeddings of the init phrase) is accepted and ignored: the text
prompts are projections of a small latent, so there is no text-width prompt vector to copy
them into (inverting the projection would pin the latent to an arbitrary least-squares solution).
"""

from __future__ import annotations

from torch import nn

from .base import ModelDims, Prompts, PromptLearner, normal_prompt


class SharedSeparate(PromptLearner, method="shared_separate"):
    """``text[k] = TextProj_k(z[k])``, ``vision[k] = VisProj_k(z[k])`` with a shared latent z[k] (n × s).

    Hyper-parameter (keyword argument): ``latent`` s, the latent width (paper: 32, 64). Each depth
    owns independently initialised projections (the reference code deep-copies one layer, so all
    depths start equal).

    Trainable parameters per depth: n·s + (s + 1)·Dt + (s + 1)·Dv; on CLIPSeg (Dt 512, Dv 768,
    n = 4): 1,284·s + 1,280 (s = 64: 83,456).
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings=None, latent: int = 64):
        if dims.vision_width is None:
            raise ValueError("SharedSeparate needs a transformer vision encoder (this model has no vision tokens)")
        super().__init__(dims, depth, n_ctx)
        self.latent = int(latent)
        self.z = nn.ParameterList(normal_prompt(n_ctx, self.latent) for _ in range(depth))
        self.text_proj = nn.ModuleList(nn.Linear(self.latent, dims.text_width) for _ in range(depth))
        self.vision_proj = nn.ModuleList(nn.Linear(self.latent, dims.vision_width) for _ in range(depth))

    def forward(self, image_feature=None) -> Prompts:
        z = [zk.unsqueeze(0) for zk in self.z]
        return Prompts(text=[proj(zk) for proj, zk in zip(self.text_proj, z)],
                       vision=[proj(zk) for proj, zk in zip(self.vision_proj, z)])
