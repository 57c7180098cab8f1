"""CLIP text transformer (as used by CRIS) with deep text prompts.

Parameter names follow OpenAI CLIP / CRIS: ``token_embedding``, ``positional_embedding``,
``transformer.resblocks.{i}.{attn,ln_1,mlp.c_fc,mlp.c_proj,ln_2}``, ``ln_final``,
``text_projection`` (a (width, embed_dim) matrix used as ``x @ text_projection``).

Blocks run batch-first on (B, L, width); a block is called ``block(x, mask)`` so forward
pre-hooks see the layer input as ``args[0]``.

Attention: causal mask plus a key padding mask. (CRIS itself only uses the causal mask in the
text tower; with a causal mask padding sits after the end token, so the two differ only at
padding positions, which the decoder masks out anyway.)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..text_prompts import insert_prompt, replace_prompt


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, L, D); ``mask`` (B·heads, L, L) boolean, True = may NOT attend."""
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])


def attention_mask(padding: torch.Tensor, heads: int) -> torch.Tensor:
    """Boolean (B·heads, L, L) mask, True where attention is forbidden: future tokens and padding keys.

    A token always sees itself, so no row is fully masked.
    """
    b, length = padding.shape
    allowed = torch.ones(length, length, dtype=torch.bool, device=padding.device).tril()[None]
    allowed = allowed & padding[:, None, :].bool()
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=padding.device)[None]
    return (~allowed).repeat_interleave(heads, dim=0)


class TextEncoder(nn.Module):
    """Token + positional embedding, ``layers`` residual attention blocks, ``ln_final``, ``text_projection``."""

    def __init__(self, embed_dim: int = 1024, context_length: int = 77, vocab_size: int = 49408,
                 width: int = 512, heads: int = 8, layers: int = 12):
        super().__init__()
        self.context_length = context_length
        self.text_heads = heads
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.transformer = Transformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)

    def encode_text(self, ids: torch.Tensor, padding_mask: torch.Tensor, eot_index: torch.Tensor,
                    prompts: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Word features (B, L+n, width), sentence feature (B, embed_dim) and the extended padding mask.

        ``padding_mask`` (B, L): 1/True for real tokens, 0/False for padding. ``eot_index`` (B,):
        position of the end token in ``ids``. ``prompts[k]`` (1 or B, n, width): k = 0 is inserted
        right after the start token; k >= 1 replaces those n slots on the input of layer k+1.
        Position embeddings are added once, at the input. The end index is shifted by n.
        """
        device = self.token_embedding.weight.device
        ids = ids.to(device)
        pad = padding_mask.to(device).bool()
        batch = ids.shape[0]
        x = self.token_embedding(ids)
        n = 0
        if prompts:
            n = prompts[0].shape[-2]
            x, pad = insert_prompt(x, pad, prompts[0])
        length = x.shape[1]
        if length > self.context_length:
            raise ValueError(f"text of {length} tokens (with {n} prompt tokens) exceeds context length "
                             f"{self.context_length}")
        x = x + self.positional_embedding[:length].to(x.dtype)
        mask = attention_mask(pad, self.text_heads)
        for k, block in enumerate(self.transformer.resblocks):
            if prompts and 0 < k < len(prompts):
                x = replace_prompt(x, prompts[k])
            x = block(x, mask)
        x = self.ln_final(x)
        state = x[torch.arange(batch, device=device), eot_index.to(device) + n] @ self.text_projection
        return x, state, pad

    def forward(self, ids, padding_mask, eot_index, prompts=None):
        """(word features, sentence feature): see ``encode_text``."""
        words, state, _ = self.encode_text(ids, padding_mask, eot_index, prompts)
        return words, state
