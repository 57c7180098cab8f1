"""Shared Attention (deep): a joint latent per depth, mixed by its own transformer encoder layer.

Difference from the reference code: it builds ``nn.TransformerEncoderLayer`` with the default
``batch_first=False`` and feeds (1, n, D) tensors, so the layer reads the n prompt tokens as a
batch of n sequences of length 1 and each token attends only to itself. Ours uses
``batch_first=True``: the n prompt tokens of a depth attend to each other.

``init_embeddings`` is accepted and ignored: text prompts are outputs of the transformer layer,
not free vectors, so a phrase's word embeddings have nowhere to go.
"""

from __future__ import annotations

from torch import nn

from .base import ModelDims, Prompts, PromptLearner, normal_prompt


class SharedAttention(PromptLearner, method="shared_attention"):
    """``out = T_k(z[k])`` with z[k] (n × (Dt + Dv)); text[k] = out[..., :Dt], vision[k] = out[..., Dt:].

    Hyper-parameters (keyword arguments): ``heads`` (paper: 16, 20, 32; must divide Dt + Dv),
    ``dropout`` (paper: 0.1–0.55), ``ffn`` the feed-forward width (paper: 1280, 1420),
    ``norm_first`` (pre- or post-LayerNorm). Each depth's layer runs once per forward and feeds
    both modalities.

    Trainable parameters per depth with D = Dt + Dv and feed-forward width F:
    n·D + (3D² + 3D) + (D² + D) + (D·F + F) + (F·D + D) + 4D; on CLIPSeg (D = 1280, n = 4):
    6,570,240 + 2,561·F.
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings=None, heads: int = 16,
                 dropout: float = 0.1, ffn: int = 1280, norm_first: bool = False):
        if dims.vision_width is None:
            raise ValueError("SharedAttention needs a transformer vision encoder (this model has no vision tokens)")
        super().__init__(dims, depth, n_ctx)
        width = dims.text_width + dims.vision_width
        if width % int(heads):
            raise ValueError(f"SharedAttention: heads={heads} does not divide the joint width {width}")
        self.heads, self.dropout, self.ffn, self.norm_first = int(heads), float(dropout), int(ffn), bool(norm_first)
        self.z = nn.ParameterList(normal_prompt(n_ctx, width) for _ in range(depth))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model=width, nhead=self.heads, dim_feedforward=self.ffn,
                                       dropout=self.dropout, norm_first=self.norm_first, batch_first=True)
            for _ in range(depth))

    def forward(self, image_feature=None) -> Prompts:
        outs = [layer(z.unsqueeze(0)) for layer, z in zip(self.layers, self.z)]
        dt = self.dims.text_width
        return Prompts(text=[o[..., :dt] for o in outs], vision=[o[..., dt:] for o in outs])
