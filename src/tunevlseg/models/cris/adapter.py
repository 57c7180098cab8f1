"""CRIS behind the same prompt-learner interface as ``CLIPSegAdapter``.

* text prompts: inserted after the start token, replaced at the input of layers 2..d,
  end-of-text pooling index shifted by n, padding mask extended (see ``TextEncoder``);
* CRIS's ResNet has no vision tokens: ``max_vision_depth`` is 0, vision prompts are refused;
* CoCoOp's image feature is the spatial mean of C5 (``image_feature_dim`` = embed_dim).

The frozen model (BatchNorm included) is kept in eval mode whatever ``train()`` is called with
(unless ``frozen_norm=False``: pretraining the demo stand-in end to end).
"""

from __future__ import annotations

import torch
from torch import nn

from ...prompts.base import ModelDims, PromptLearner
from ..text_prompts import PromptTokenizer, TextBatch, first_eos
from .model import CRIS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CRISAdapter(nn.Module):
    """Frozen CRIS exposing per-layer text prompt hooks for a ``PromptLearner``."""

    def __init__(self, model: CRIS, tokenizer, mean=CLIP_MEAN, std=CLIP_STD, max_text_len: int | None = None,
                 frozen_norm: bool = True):
        super().__init__()
        self.model = model
        self.frozen_norm = frozen_norm  # False only when training CRIS itself (the demo stand-in)
        self.tokenizer = tokenizer
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        cfg = model.cfg
        self.max_text_len = min(max_text_len or cfg.context_length, cfg.context_length)
        self.prompt_tokenizer = PromptTokenizer(tokenizer, self.max_text_len, first_eos(tokenizer.eos_token_id))
        self.dims = ModelDims(text_width=cfg.text_width, vision_width=None, image_feature_dim=cfg.embed_dim,
                              max_text_depth=cfg.text_layers, max_vision_depth=0)
        if frozen_norm:
            self.model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_norm:
            self.model.eval()  # frozen BatchNorm statistics
        return self

    # ----------------------------------------------------------------- inputs
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] (B, 3, H, W) to CLIP-normalised input."""
        return (images - self.mean) / self.std

    def tokenize(self, texts: list[str], n_ctx: int = 0) -> TextBatch:
        """Tokenise, truncated so ``n_ctx`` context tokens still fit; the end index is the unprompted one."""
        return self.prompt_tokenizer(texts, n_ctx)

    def token_embeddings_for(self, text: str, n_ctx: int) -> torch.Tensor | None:
        """Embeddings of the words of ``text`` if they are exactly ``n_ctx`` tokens (CoOp's init)."""
        return self.prompt_tokenizer.word_embeddings(text, n_ctx, self.model.backbone.token_embedding)

    # ---------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, text: TextBatch, learner: PromptLearner | None = None) -> torch.Tensor:
        """Logits (B, 1, H, W) for images in [0, 1] and tokenised prompts."""
        pixels = self.normalize(images)
        feats = self.model.encode_image(pixels)
        prompts = None
        if learner is not None and not learner.is_empty:
            out = learner(feats[2].mean(dim=(2, 3)) if learner.uses_image_feature else None)
            if out.vision:
                raise NotImplementedError("CRIS has no vision tokens: vision prompts are not supported")
            prompts = out.text
        words, state, token_mask = self.model.encode_text(text.input_ids, text.attention_mask, text.eot_index,
                                                          prompts)
        return self.model.decode(feats, words, state, token_mask, images.shape[-2:])


__all__ = ["CRISAdapter", "CLIP_MEAN", "CLIP_STD"]
