"""MaPLe (deep): text context tokens, and vision tokens coupled from them, at layers 1..d.

Coupling choice in a search space: one categorical hyper-parameter ``coupling`` whose values are
``"linear"`` (a Linear(Dt, Dv) per depth, as the MaPLe paper), ``"mlp<h>"`` such as ``"mlp32"``
(Linear(Dt, h) – ReLU – Linear(h, Dv) – LayerNorm(Dv)) or ``"lora<h>"`` (Linear(Dt, h, no bias) –
Linear(h, Dv, no bias) – LayerNorm(Dv, bias)); the hidden width is parsed from the name
(``prompts/projections.py``). The reference searched mlp and lora with h ∈ {32, 64, 96}::

    maple:
      search:
        coupling: {type: categorical, choices: [mlp32, mlp64, mlp96, lora32, lora64, lora96]}
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ModelDims, Prompts, TextContextMixin, VisionPromptLearner, normal_prompt
from .projections import lora, mlp, parse_projection

LAYOUTS = ("ours", "reference")


def coupling_net(text_width: int, vision_width: int, kind: str, hidden: int | None, layout: str = "ours",
                 first_layer_init: str = "default") -> nn.Module:
    """One depth's coupling. ``mlp`` layout ``ours``: the last Linear has the bias, the LayerNorm none;
    ``reference``: the last Linear has none, the LayerNorm has one (same count, different function)."""
    if layout not in LAYOUTS:
        raise ValueError(f"MaPLe: unknown coupling_layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    if kind == "linear":
        return nn.Linear(text_width, vision_width)
    if kind == "lora":
        return lora(text_width, hidden, vision_width, norm_bias=True)
    reference = layout == "reference"
    return mlp(text_width, hidden, vision_width, linear_bias=not reference, norm_bias=reference,
               first_layer_init=first_layer_init)


class MaPLe(TextContextMixin, VisionPromptLearner, method="maple"):
    """``text[k] = ctx[k]``, ``vision[k] = couple_k(ctx[k])``; ctx[0] may start from a phrase's embeddings.

    Hyper-parameters (keyword arguments): ``coupling`` (default ``"mlp64"``, the reference's),
    ``hidden`` (with ``coupling="mlp"`` or ``"lora"``), ``coupling_layout`` ``"ours"`` (default) or
    ``"reference"`` (mlp only), ``first_layer_init`` ``"default"`` or ``"kaiming"`` (mlp only, the
    reference's), ``init_from_text`` (``TextContextMixin``), ``prompts_in_decoder`` and
    ``decoder_sees_next_prompt`` (``VisionPromptLearner``).

    Trainable parameters per depth (text width Dt, vision width Dv, n tokens):
    linear: n·Dt + Dt·Dv + Dv (CLIPSeg: 2,048 + 393,984 = 396,032);
    mlp h:  n·Dt + (Dt + 1)·h + (h + 1)·Dv + Dv (CLIPSeg: 3,584 + 1,281·h), either layout;
    lora h: n·Dt + Dt·h + h·Dv + 2·Dv (CLIPSeg: 3,584 + 1,280·h).
    """


    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, init_embeddings: torch.Tensor | None = None,
                 coupling: str = "mlp64", hidden: int | None = None, coupling_layout: str = "ours",
                 first_layer_init: str = "default", init_from_text: bool = True, **vision_options):
        super().__init__(dims, depth, n_ctx, **vision_options)
        self.kind, self.hidden = parse_projection(coupling, hidden, owner="MaPLe coupling")
        self.coupling = self.kind if self.hidden is None else f"{self.kind}{self.hidden}"
        self.coupling_layout, self.first_layer_init = str(coupling_layout), str(first_layer_init)
        self.ctx = nn.ParameterList(normal_prompt(n_ctx, dims.text_width) for _ in range(depth))
        self._init_text_context(init_embeddings, init_from_text)
        self.couple = nn.ModuleList(
            coupling_net(dims.text_width, dims.vision_width, self.kind, self.hidden, self.coupling_layout,
                         self.first_layer_init)
            for _ in range(depth))

    def forward(self, image_feature=None) -> Prompts:
        text = [c.unsqueeze(0) for c in self.ctx]
        return self.prompts(text, [net(t) for net, t in zip(self.couple, text)])
