"""CRIS's vision-language transformer decoder (``model/layers.py: TransformerDecoder``).

Pre-norm layers: visual self-attention (2-D sine positions on queries/keys), cross-attention
from vision to word features (1-D sine positions on keys, key padding mask), FFN; each
attention output is LayerNorm'ed before the residual add, a final LayerNorm at the end.
Names follow the reference (``layers.{i}.self_attn``, ``multihead_attn``, ``ffn.{0,3,4}``,
``norm1..3``, ``self_attn_norm``, ``cross_attn_norm``, ``norm``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pos1d(d_model: int, length: int) -> torch.Tensor:
    """(length, d_model) sine/cosine encoding."""
    if d_model % 2:
        raise ValueError(f"d_model must be even, got {d_model}")
    pe = torch.zeros(length, d_model)
    position = torch.arange(0, length).unsqueeze(1).float()
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float) * -(math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def pos2d(d_model: int, height: int, width: int) -> torch.Tensor:
    """(height·width, d_model): first half encodes x, second half y."""
    if d_model % 4:
        raise ValueError(f"d_model must be divisible by 4, got {d_model}")
    pe = torch.zeros(d_model, height, width)
    half = d_model // 2
    div_term = torch.exp(torch.arange(0.0, half, 2) * -(math.log(10000.0) / half))
    pos_w = torch.arange(0.0, width).unsqueeze(1)
    pos_h = torch.arange(0.0, height).unsqueeze(1)
    pe[0:half:2] = torch.sin(pos_w * div_term).transpose(0, 1).unsqueeze(1).repeat(1, height, 1)
    pe[1:half:2] = torch.cos(pos_w * div_term).transpose(0, 1).unsqueeze(1).repeat(1, height, 1)
    pe[half::2] = torch.sin(pos_h * div_term).transpose(0, 1).unsqueeze(2).repeat(1, 1, width)
    pe[half + 1::2] = torch.cos(pos_h * div_term).transpose(0, 1).unsqueeze(2).repeat(1, 1, width)
    return pe.reshape(d_model, height * width).transpose(0, 1)


class TransformerDecoderLayer(nn.Module):
    def __init__(self, d_model: int = 512, nhead: int = 8, dim_feedforward: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, kdim=d_model, vdim=d_model,
                                                    batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, dim_feedforward), nn.ReLU(True), nn.Dropout(dropout),
                                 nn.LayerNorm(dim_feedforward), nn.Linear(dim_feedforward, d_model))
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, vis, txt, vis_pos, txt_pos, pad_mask):
        """``vis`` (B, HW, D), ``txt`` (B, L, D), ``pad_mask`` (B, L) True at padding."""
        vis2 = self.norm1(vis)
        q = k = vis2 + vis_pos
        vis2 = self.self_attn(q, k, value=vis2, need_weights=False)[0]
        vis = vis + self.dropout1(self.self_attn_norm(vis2))
        vis2 = self.norm2(vis)
        vis2 = self.multihead_attn(query=vis2 + vis_pos, key=txt + txt_pos, value=txt,
                                   key_padding_mask=pad_mask, need_weights=False)[0]
        vis = vis + self.dropout2(self.cross_attn_norm(vis2))
        vis2 = self.ffn(self.norm3(vis))
        return vis + self.dropout3(vis2)


class TransformerDecoder(nn.Module):
    def __init__(self, num_layers: int = 3, d_model: int = 512, nhead: int = 8, dim_ffn: int = 2048,
                 dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(TransformerDecoderLayer(d_model, nhead, dim_ffn, dropout)
                                    for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)

    def forward(self, vis: torch.Tensor, txt: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """``vis`` (B, C, H, W), ``txt`` (B, L, C), ``pad_mask`` (B, L) True at padding → (B, C, H, W)."""
        b, c, h, w = vis.shape
        length = txt.shape[1]
        vis_pos = pos2d(c, h, w).to(vis)[None]
        txt_pos = pos1d(txt.shape[2], length).to(txt)[None]
        out = vis.flatten(2).transpose(1, 2)
        for layer in self.layers:
            out = layer(out, txt, vis_pos, txt_pos, pad_mask)
        return self.norm(out).transpose(1, 2).reshape(b, c, h, w)
