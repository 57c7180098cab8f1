"""MaPLe (deep): text context tokens, and vision tokens coupled from them, at layers 1..d.

Coupling choice in a search space: one categorical hyper-parameter ``coupling`` whose values are
``"linear"`` (a Linear(Dt, Dv) per depth, as the MaPLe paper) or ``"mlp<h>"`` such as ``"mlp32"``,
``"mlp64"``, ``"mlp96"`` (Linear(Dt, h) – ReLU – Linear(h, Dv) – LayerNorm(Dv, no bias)); the hidden
width is parsed from the name. For direct use, ``coupling="mlp", hidden=h`` is accepted too::

    maple:
      search:
        coupling: {type: categorical, choices: [linear, mlp32, mlp64, mlp96]}
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .base import ModelDims, Prompts, PromptLearner, normal_prompt


def parse_coupling(coupling: str, hidden: int | None = None) -> int | None:
    """Hidden width of the coupling: None for ``"linear"``, h for ``"mlp<h>"`` or ``"mlp"`` + ``hidden``."""
    name = str(coupling).strip().lower()
    if name == "linear":
        if hidden is not None:
            raise ValueError("MaPLe: 'hidden' only applies to coupling='mlp'")
        return None
    match = re.fullmatch(r"mlp(\d+)?", name)
    if not match:
        raise ValueError(f"MaPLe: unknown coupling '{coupling}'; use 'linear', 'mlp<h>' (e.g. 'mlp64') or 'mlp' + hidden")
    if match.group(1) and hidden is not None and int(match.group(1)) != int(hidden):
        raise ValueError(f"MaPLe: coupling '{coupling}' contradicts hidden={hidden}")
    width = int(match.group(1)) if match.group(1) else hidden
    if width is None or width < 1:
        raise ValueError("MaPLe: coupling='mlp' needs a positive hidden width ('mlp64' or hidden=64)")
    return int(width)


def coupling_net(text_width: int, vision_width: int, hidden: int | None) -> nn.Module:
    """Linear(Dt, Dv) when ``hidden`` is None, else Linear(Dt, h) – ReLU – Linear(h, Dv) – LayerNorm(Dv, no bias)."""
    if hidden is None:
        return nn.Linear(text_width, vision_width)
    return nn.Sequential(nn.Linear(text_width, hidden), nn.ReLU(), nn.Linear(hidden, vision_width),
                         nn.LayerNorm(vision_width, bias=False))


class MaPLe(PromptLearner, method="maple"):
    """``text[k] = ctx[k]``, ``vision[k] = couple_k(ctx[k])``; ctx[0] may start from a phrase's embeddings.

    Trainable parameters per depth (text width Dt, vision width Dv, n tokens):
    linear: n·Dt + Dt·Dv + Dv (CLIPSeg: 2,048 + 393,984 = 396,032);
    mlp h:  n·Dt + (Dt + 1)·h + (h + 1)·Dv + Dv (CLIPSeg: 3,584 + 1,281·h).
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings: torch.Tensor | None = None,
                 coupling: str = "linear", hidden: int | None = None):
        if dims.vision_width is None:
            raise ValueError("MaPLe needs a transformer vision encoder (this model has no vision tokens)")
        super().__init__(dims, depth, n_ctx)
        self.hidden = parse_coupling(coupling, hidden)
        self.coupling = "linear" if self.hidden is None else f"mlp{self.hidden}"
        self.ctx = nn.ParameterList(normal_prompt(n_ctx, dims.text_width) for _ in range(depth))
        if init_embeddings is not None:
            self.ctx[0].data.copy_(init_embeddings)
        self.couple = nn.ModuleList(
            coupling_net(dims.text_width, dims.vision_width, self.hidden) for _ in range(depth))

    def forward(self, image_feature=None) -> Prompts:
        text = [c.unsqueeze(0) for c in self.ctx]
        return Prompts(text=text, vision=[net(t) for net, t in zip(self.couple, text)])
