"""The model contract: what every benchmark model provides to prompt learners, the tuner and the workflow.

A model is wrapped by a :class:`PromptableModel` subclass (an "adapter"). Prompt learners never see
it: they get its :class:`~tunevlseg.prompts.base.ModelDims` and return
:class:`~tunevlseg.prompts.base.Prompts`; the adapter never knows which method made them — the
depth reaches its encoders only as ``len(prompts.text)`` / ``len(prompts.vision)``.

The forward pass is split in two so that the frozen, unprompted image side can be computed once
and reused (methods without vision prompts, e.g. CoOp/CoCoOp):

* :meth:`PromptableModel.encode_image` — normalised pixels (+ optional vision prompts) →
  :class:`ImageFeatures` (whatever the decoder reads, plus the pooled feature CoCoOp needs);
* :meth:`PromptableModel.decode` — features + tokenised text + prompts → mask logits (B, 1, H, W);
  the text encoder (with text prompts) runs here.

A third model must implement the abstract members below and be registered in
:mod:`tunevlseg.models.registry`; ``tests/unit/models/test_contract.py`` then runs the contract
tests (forward, backward, gradients reach exactly the learner, depth d touches exactly layers
1..d) over every (model, method) pair it supports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..prompts.base import ModelDims, PromptLearner, Prompts
from .text_prompts import PromptTokenizer, TextBatch


def freeze(model: nn.Module) -> None:
    """Freeze every weight and keep the module in eval mode (dropout off, BatchNorm statistics fixed)."""
    model.requires_grad_(False)
    model.eval()


@dataclass
class ImageFeatures:
    """The image side of a forward pass: ``maps`` (what the decoder reads, batch first), ``pooled``
    (B, image_feature_dim) when asked for, and the input's (H, W). Tensors can be moved, sliced, stacked."""

    maps: tuple[torch.Tensor, ...]
    pooled: torch.Tensor | None = None
    input_size: tuple[int, int] | None = None

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (*self.maps, *(() if self.pooled is None else (self.pooled,)))

    def to(self, *args, **kwargs) -> ImageFeatures:
        return ImageFeatures(tuple(t.to(*args, **kwargs) for t in self.maps),
                             None if self.pooled is None else self.pooled.to(*args, **kwargs), self.input_size)


class PromptableModel(nn.Module, ABC):
    """A frozen vision-language segmentation model with per-layer prompt hooks.

    Subclasses set ``dims`` (:class:`ModelDims`), ``tokenizer``, ``prompt_tokenizer``
    (:class:`PromptTokenizer`) and the normalisation buffers (``set_normalization``).
    """

    dims: ModelDims
    tokenizer: object
    prompt_tokenizer: PromptTokenizer

    # ------------------------------------------------------------- loading (registry)
    @classmethod
    @abstractmethod
    def load(cls, weights: str, options: dict) -> PromptableModel:
        """The adapter around pretrained ``weights`` (hub name, folder or file); ``options`` = config keys."""

    @classmethod
    @abstractmethod
    def build_standin(cls, arch: dict, tokenizer) -> PromptableModel:
        """A random-initialised, trainable small model sized by ``arch`` (the demo's stand-in)."""

    @abstractmethod
    def save(self, out_dir: Path) -> None:
        """Write the model in its public format so that ``load(out_dir, {})`` reads it back."""

    # ----------------------------------------------------------------------- inputs
    def set_normalization(self, mean, std) -> None:
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] (B, 3, H, W) to the model's normalised input."""
        return (images - self.mean) / self.std

    def tokenize(self, texts: list[str], n_ctx: int = 0) -> TextBatch:
        """Tokenise prompts, truncated so that ``n_ctx`` context tokens still fit (see ``PromptTokenizer``)."""
        return self.prompt_tokenizer(texts, n_ctx)

    def token_embeddings_for(self, text: str, n_ctx: int) -> torch.Tensor | None:
        """Embeddings of the words of ``text`` if they are exactly ``n_ctx`` tokens (CoOp's init)."""
        return self.prompt_tokenizer.word_embeddings(text, n_ctx, self.token_embedding())

    @abstractmethod
    def token_embedding(self) -> nn.Embedding:
        """The text tower's token embedding."""

    @abstractmethod
    def prompt_layers(self) -> dict[str, list[nn.Module]]:
        """Encoder layers that prompts enter, per modality (``text``, ``vision``): prompt k feeds layer k."""

    # ---------------------------------------------------------------------- forward
    @abstractmethod
    def encode_image(self, pixel_values: torch.Tensor, prompts: Prompts | None = None,
                     pooled: bool = False) -> ImageFeatures:
        """Image features from normalised pixels; ``prompts.vision[k]`` (1 or B, n, width) enters layer k+1."""

    @abstractmethod
    def decode(self, features: ImageFeatures, text: TextBatch, prompts: Prompts) -> torch.Tensor:
        """Mask logits (B, 1, H, W) from image features and text; ``prompts.text[k]`` enters text layer k+1."""

    def forward(self, images: torch.Tensor, text: TextBatch, learner: PromptLearner | None = None) -> torch.Tensor:
        """Logits (B, 1, H, W) for images in [0, 1] and tokenised prompts."""
        if learner is not None and "vision" in learner.modalities:
            if learner.uses_image_feature:
                raise NotImplementedError("image-conditioned vision prompts would need a second vision pass")
            prompts = learner(None)
            return self.decode(self.encode_image(self.normalize(images), prompts), text, prompts)
        pooled = learner is not None and learner.uses_image_feature
        return self.forward_frozen(self.encode_image(self.normalize(images), None, pooled=pooled), text, learner)

    def forward_frozen(self, features: ImageFeatures, text: TextBatch,
                       learner: PromptLearner | None = None) -> torch.Tensor:
        """The rest of :meth:`forward` for learners without vision prompts, from unprompted image features
        (``encode_image(pixels, None, pooled=learner.uses_image_feature)``: frozen, so they may be cached)."""
        if learner is None or learner.is_empty:
            return self.decode(features, text, Prompts())
        prompts = learner(features.pooled if learner.uses_image_feature else None)
        if prompts.vision:
            raise ValueError(f"{type(learner).__name__} returned vision prompts from unprompted image features")
        return self.decode(features, text, prompts)


__all__ = ["ImageFeatures", "PromptableModel", "freeze"]
