"""What every prompt-tuning method shares: model dimensions, prompt bundles, the learner base."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..methods import get_method


@dataclass(frozen=True)
class ModelDims:
    """Widths and usable depths an adapter exposes to prompt learners."""

    text_width: int
    vision_width: int | None
    image_feature_dim: int
    max_text_depth: int
    max_vision_depth: int


@dataclass
class Prompts:
    """Per-layer prompts: ``text[k]`` / ``vision[k]`` enter layer k+1, shape (B or 1, n, width)."""

    text: list[torch.Tensor] | None = None
    vision: list[torch.Tensor] | None = None


def normal_prompt(n: int, width: int, std: float = 0.02) -> nn.Parameter:
    """A prompt block initialised from N(0, std²)."""
    return nn.Parameter(torch.randn(n, width) * std)


class PromptLearner(nn.Module):
    """Base class: owns the trainable prompt parameters of one method.

    A subclass names its method record (``class CoOp(PromptLearner, method="coop")``), from which
    it takes ``modalities`` and ``uses_image_feature`` (:mod:`tunevlseg.methods`), and implements
    ``forward(image_feature)`` returning ``Prompts``. ``uses_image_feature`` learners (CoCoOp)
    receive the projected pooled image feature; the others receive ``None``.
    """

    method: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ()
    uses_image_feature: ClassVar[bool] = False

    def __init_subclass__(cls, method: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if method is not None:
            info = get_method(method)
            cls.method, cls.modalities, cls.uses_image_feature = info.name, info.modalities, info.uses_image_feature

    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4):
        super().__init__()
        self.dims = dims
        self.depth = depth
        self.n_ctx = n_ctx
        limit = self.max_depth(dims)
        if not 1 <= depth <= limit:
            raise ValueError(f"{type(self).__name__}: depth {depth} outside 1..{limit} for this model")

    @classmethod
    def max_depth(cls, dims: ModelDims) -> int:
        """Deepest prompt depth this method supports on a model with ``dims``."""
        limits = []
        if "text" in cls.modalities:
            limits.append(dims.max_text_depth)
        if "vision" in cls.modalities:
            limits.append(dims.max_vision_depth)
        return min(limits) if limits else 0

    @property
    def is_empty(self) -> bool:
        """True for learners that add no prompt at all (zero-shot)."""
        return not self.modalities

    @property
    def text_ctx(self) -> int:
        """Number of text tokens this learner inserts (the tokenizer leaves room for them)."""
        return self.n_ctx if "text" in self.modalities else 0

    def decay_parameters(self) -> list[nn.Parameter]:
        """Parameters that get weight decay (projection weights); prompt vectors are never decayed."""
        return [p for name, p in self.named_parameters() if name.endswith("weight") and p.dim() > 1 and "ctx" not in name]

    def forward(self, image_feature: torch.Tensor | None) -> Prompts:  # pragma: no cover - abstract
        raise NotImplementedError
