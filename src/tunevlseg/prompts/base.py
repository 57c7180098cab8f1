"""What every prompt-tuning method shares: model dimensions, prompt bundles, the learner base."""

from __future__ import annotations

import copy
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
    """Per-layer prompts: ``text[k]`` / ``vision[k]`` enter layer k+1, shape (B or 1, n, width).

    Two flags tell an adapter how vision prompts reach its mask decoder (docs/explanation/methods.md,
    "Where we deliberately differ"); an adapter without a token decoder ignores them:

    * ``vision_in_decoder``: the n vision prompt tokens stay in the activations the decoder
      reads (through its projections, conditioning and attention layers) and are removed only
      before the reshape to the patch grid (the reference's behaviour). False: they are dropped
      before the decoder.
    * ``decoder_sees_next_prompt``: at a decoder-read layer k < d, the prompt slots of the stored
      activation hold the raw prompt k+1, i.e. the next layer's input (the reference overwrites
      them in place). False: they hold layer k's output. Only matters with ``vision_in_decoder``.
    """

    text: list[torch.Tensor] | None = None
    vision: list[torch.Tensor] | None = None
    vision_in_decoder: bool = False
    decoder_sees_next_prompt: bool = False


def normal_prompt(n: int, width: int, std: float = 0.02) -> nn.Parameter:
    """A prompt block initialised from N(0, std²)."""
    return nn.Parameter(torch.randn(n, width) * std)


FIRST_LAYER_INITS = ("default", "kaiming")


def init_first_layer(net: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise the first Linear of ``net`` (a Linear or a Sequential starting with one).

    ``"default"``: PyTorch's own initialisation, unchanged. ``"kaiming"``: Kaiming-normal
    weights for a following ReLU (fan-in mode), as the reference does for the hidden layer of
    its MLP projections; the bias keeps PyTorch's initialisation.
    """
    if scheme not in FIRST_LAYER_INITS:
        raise ValueError(f"unknown first_layer_init '{scheme}'; use one of {', '.join(FIRST_LAYER_INITS)}")
    if scheme == "kaiming":
        first = net[0] if isinstance(net, nn.Sequential) else net
        nn.init.kaiming_normal_(first.weight, nonlinearity="relu")
    return net


def copies_or_fresh(build, depth: int, depth_init: str) -> nn.ModuleList:
    """``depth`` modules from ``build()``: each freshly initialised (``"independent"``) or deep copies
    of one (``"copied"``, the reference's ``copy.deepcopy``: all depths start equal, then train apart)."""
    if depth_init == "independent":
        return nn.ModuleList(build() for _ in range(depth))
    if depth_init == "copied":
        first = build()
        return nn.ModuleList([first] + [copy.deepcopy(first) for _ in range(depth - 1)])
    raise ValueError(f"unknown depth_init '{depth_init}'; use 'independent' or 'copied'")


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


class TextContextMixin:
    """Text-context learners (CoOp, CoCoOp, MaPLe): ctx[0] may start from the init phrase's embeddings.

    ``init_from_text`` (default True): copy ``init_embeddings`` (the word embeddings of the
    configured ``init_text``, tuning.init_text) into ctx[0]; False: every depth N(0, 0.02²).
    """

    takes_init_text = True  # the tuner passes ``init_embeddings`` only to these learners

    def _init_text_context(self, init_embeddings: torch.Tensor | None, init_from_text: bool) -> None:
        self.init_from_text = bool(init_from_text)
        if init_embeddings is not None and self.init_from_text:
            self.ctx[0].data.copy_(init_embeddings)


class VisionPromptLearner(PromptLearner):
    """Base of the learners with vision prompts (VPT, MaPLe, Shared Attention, Shared Separate).

    Options (keyword arguments), written into the ``Prompts`` they return for the adapter:
    ``prompts_in_decoder`` (default False; the reference: True) and ``decoder_sees_next_prompt``
    (default False; the reference: True) — see ``Prompts``.
    """

    def __init__(self, dims: ModelDims, depth: int, n_ctx: int = 4, *, prompts_in_decoder: bool = False,
                 decoder_sees_next_prompt: bool = False):
        if dims.vision_width is None:
            raise ValueError(f"{type(self).__name__} needs a transformer vision encoder (this model has no vision tokens)")
        super().__init__(dims, depth, n_ctx)
        self.prompts_in_decoder = bool(prompts_in_decoder)
        self.decoder_sees_next_prompt = bool(decoder_sees_next_prompt)

    def prompts(self, text: list[torch.Tensor] | None, vision: list[torch.Tensor]) -> Prompts:
        """The learner's ``Prompts`` with its decoder flags."""
        return Prompts(text=text, vision=vision, vision_in_decoder=self.prompts_in_decoder,
                       decoder_sees_next_prompt=self.decoder_sees_next_prompt)
