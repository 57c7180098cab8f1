"""Shared Separate (deep): one latent per depth, projected separately to text and vision prompts.

``init_embeddings`` (the word embeddings of the init phrase) is accepted and ignored: the text
prompts are projections of a small latent, so there is no text-width prompt vector to copy
them into (inverting the projection would pin the latent to an arbitrary least-squares solution).
"""

from __future__ import annotations

from torch import nn

from .base import ModelDims, Prompts, VisionPromptLearner, copies_or_fresh, normal_prompt


class SharedSeparate(VisionPromptLearner, method="shared_separate"):
    """``text[k] = TextProj_k(z[k])``, ``vision[k] = VisProj_k(z[k])`` with a shared latent z[k] (n × s).

    Hyper-parameters (keyword arguments): ``latent`` s, the latent width (default 64; paper: 32,
    64); ``depth_init`` ``"independent"`` (default: each depth's projections initialised on their
    own) or ``"copied"`` (the reference deep-copies one layer, so all depths start equal);
    ``prompts_in_decoder`` and ``decoder_sees_next_prompt`` (``VisionPromptLearner``).

    Trainable parameters per depth: n·s + (s + 1)·Dt + (s + 1)·Dv; on CLIPSeg (Dt 512, Dv 768,
    n = 4): 1,284·s + 1,280 (s = 64: 83,456).
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings=None, latent: int = 64,
                 depth_init: str = "independent", **vision_options):
        super().__init__(dims, depth, n_ctx, **vision_options)
        self.latent, self.depth_init = int(latent), str(depth_init)
        self.z = nn.ParameterList(normal_prompt(n_ctx, self.latent) for _ in range(depth))
        self.text_proj = copies_or_fresh(lambda: nn.Linear(self.latent, dims.text_width), depth, self.depth_init)
        self.vision_proj = copies_or_fresh(lambda: nn.Linear(self.latent, dims.vision_width), depth, self.depth_init)

    def forward(self, image_feature=None) -> Prompts:
        z = [zk.unsqueeze(0) for zk in self.z]
        return self.prompts([proj(zk) for proj, zk in zip(self.text_proj, z)],
                            [proj(zk) for proj, zk in zip(self.vision_proj, z)])
