"""Shared Attention (deep): a joint latent per depth, mixed by its own transformer encoder layer.

Difference from the reference code (option ``batch_first``): it builds ``nn.TransformerEncoderLayer``
with the default ``batch_first=False`` and feeds (1, n, D) tensors, so the layer reads the n prompt
tokens as a batch of n sequences of length 1 and each token attends only to itself. Ours
(``batch_first=True``, the default): the n prompt tokens of a depth attend to each other.

``init_embeddings`` is accepted and ignored: text prompts are outputs of the transformer layer,
not free vectors, so a phrase's word embeddings have nowhere to go.
"""

from __future__ import annotations

from torch import nn

from .base import ModelDims, Prompts, VisionPromptLearner, copies_or_fresh, normal_prompt


class SharedAttention(VisionPromptLearner, method="shared_attention"):
    """``out = T_k(z[k])`` with z[k] (n × (Dt + Dv)); text[k] = out[..., :Dt], vision[k] = out[..., Dt:].

    Hyper-parameters (keyword arguments; defaults are the reference's): ``heads`` (16; paper: 16,
    20, 32; must divide Dt + Dv), ``dropout`` (0.25; paper: 0.1–0.55), ``ffn`` the feed-forward
    width (1536; paper: 1280, 1420), ``norm_first`` (True: pre-LayerNorm); ``batch_first`` (True:
    tokens attend to each other; the reference: False), ``depth_init`` ``"independent"`` (default)
    or ``"copied"`` (the reference deep-copies one layer to every depth), ``prompts_in_decoder``
    and ``decoder_sees_next_prompt`` (``VisionPromptLearner``). Each depth's layer runs once per
    forward and feeds both modalities.

    Trainable parameters per depth with D = Dt + Dv and feed-forward width F:
    n·D + (3D² + 3D) + (D² + D) + (D·F + F) + (F·D + D) + 4D; on CLIPSeg (D = 1280, n = 4):
    6,570,240 + 2,561·F.
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings=None, heads: int = 16,
                 dropout: float = 0.25, ffn: int = 1536, norm_first: bool = True, batch_first: bool = True,
                 depth_init: str = "independent", **vision_options):
        super().__init__(dims, depth, n_ctx, **vision_options)
        width = dims.text_width + dims.vision_width
        if width % int(heads):
            raise ValueError(f"SharedAttention: heads={heads} does not divide the joint width {width}")
        self.heads, self.dropout, self.ffn, self.norm_first = int(heads), float(dropout), int(ffn), bool(norm_first)
        self.batch_first, self.depth_init = bool(batch_first), str(depth_init)
        self.z = nn.ParameterList(normal_prompt(n_ctx, width) for _ in range(depth))
        self.layers = copies_or_fresh(
            lambda: nn.TransformerEncoderLayer(d_model=width, nhead=self.heads, dim_feedforward=self.ffn,
                                               dropout=self.dropout, norm_first=self.norm_first,
                                               batch_first=self.batch_first),
            depth, self.depth_init)

    def forward(self, image_feature=None) -> Prompts:
        # (1, n, D): with batch_first=False the layer reads n sequences of one token each
        outs = [layer(z.unsqueeze(0)) for layer, z in zip(self.layers, self.z)]
        dt = self.dims.text_width
        return self.prompts([o[..., :dt] for o in outs], [o[..., dt:] for o in outs])
