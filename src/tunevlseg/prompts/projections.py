"""Small projection networks shared by CoCoOp's meta-net and MaPLe's coupling.

A projection is named ``"linear"``, ``"mlp<h>"`` or ``"lora<h>"`` (h the hidden width, e.g.
``"mlp64"``, ``"lora32"``); ``"mlp"`` / ``"lora"`` with a separate ``hidden`` are accepted too.
Forms, for in width I, out width O (docs/explanation/methods.md has the parameter counts):

* ``linear``: Linear(I, O).
* ``mlp``: Linear(I, h) – ReLU – Linear(h, O) – LayerNorm(O); where the bias sits (on the last
  Linear or on the LayerNorm) is the caller's choice.
* ``lora`` (the reference's ``use_lora_proj``): Linear(I, h, no bias) – Linear(h, O, no bias) –
  LayerNorm(O): no non-linearity, a rank-h factorisation. As in the reference, h > O collapses
  to Linear(I, O, no bias) – LayerNorm(O).
"""

from __future__ import annotations

import re

from torch import nn

from .base import init_first_layer


def parse_projection(name: str, hidden: int | None = None, *, owner: str = "projection") -> tuple[str, int | None]:
    """``(kind, h)`` for a projection name: ("linear", None), ("mlp", 64) for "mlp64", ("lora", 32) ..."""
    text = str(name).strip().lower()
    match = re.fullmatch(r"(linear|mlp|lora)(\d+)?", text)
    if not match or (match.group(1) == "linear" and match.group(2)):
        raise ValueError(f"{owner}: unknown projection '{name}'; use 'linear', 'mlp<h>' or 'lora<h>' "
                         "(e.g. 'mlp64', 'lora32'), or 'mlp'/'lora' with hidden=h")
    kind, digits = match.group(1), match.group(2)
    if kind == "linear":
        if hidden is not None:
            raise ValueError(f"{owner}: 'hidden' does not apply to a linear projection")
        return kind, None
    if digits and hidden is not None and int(digits) != int(hidden):
        raise ValueError(f"{owner}: projection '{name}' contradicts hidden={hidden}")
    width = int(digits) if digits else hidden
    if width is None or int(width) < 1:
        raise ValueError(f"{owner}: projection '{kind}' needs a positive hidden width ('{kind}64' or hidden=64)")
    return kind, int(width)


def mlp(in_dim: int, hidden: int, out_dim: int, *, linear_bias: bool, norm_bias: bool,
        first_layer_init: str = "default") -> nn.Sequential:
    """Linear(I, h) – ReLU – Linear(h, O, bias=linear_bias) – LayerNorm(O, bias=norm_bias)."""
    net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim, bias=linear_bias),
                        nn.LayerNorm(out_dim, bias=norm_bias))
    return init_first_layer(net, first_layer_init)


def lora(in_dim: int, hidden: int, out_dim: int, *, norm_bias: bool) -> nn.Sequential:
    """Linear(I, min(h, O), no bias) [– Linear(h, O, no bias) if h <= O] – LayerNorm(O, bias=norm_bias)."""
    layers = [nn.Linear(in_dim, min(hidden, out_dim), bias=False)]
    if hidden <= out_dim:
        layers.append(nn.Linear(hidden, out_dim, bias=False))
    return nn.Sequential(*layers, nn.LayerNorm(out_dim, bias=norm_bias))
