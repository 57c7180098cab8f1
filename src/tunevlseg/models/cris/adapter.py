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

from ...prompts.base import ModelDims, Prompts
from ..base import ImageFeatures, PromptableModel
from ..text_prompts import PromptTokenizer, TextBatch, first_eos
from .model import CRIS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CRISAdapter(PromptableModel):
    """Frozen CRIS exposing per-layer text prompt hooks for a ``PromptLearner``."""

    def __init__(self, model: CRIS, tokenizer, mean=CLIP_MEAN, std=CLIP_STD, max_text_len: int | None = None,
                 frozen_norm: bool = True):
        super().__init__()
        self.model = model
        self.frozen_norm = frozen_norm  # False only when training CRIS itself (the demo stand-in)
        self.tokenizer = tokenizer
        self.set_normalization(mean, std)
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

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, weights: str, options: dict) -> CRISAdapter:
        """A CRIS model folder, or a checkpoint file read with ``backbone``/``image_size``/``tokenizer``."""
        from .loading import load_cris

        net, tokenizer = load_cris(weights, backbone=options["backbone"], image_size=options["image_size"],
                                   tokenizer=options["tokenizer"])
        return cls(net, tokenizer, max_text_len=options.get("max_text_len"))

    @classmethod
    def build_standin(cls, arch: dict, tokenizer) -> CRISAdapter:
        from .loading import build_cris_standin

        return cls(build_cris_standin(arch, tokenizer), tokenizer, frozen_norm=False)

    def save(self, out_dir) -> None:
        from .loading import save_cris_folder

        save_cris_folder(self.model, self.tokenizer, out_dir)

    # ------------------------------------------------------------- hooks
    def token_embedding(self) -> nn.Embedding:
        return self.model.backbone.token_embedding

    def prompt_layers(self) -> dict[str, list[nn.Module]]:
        return {"text": list(self.model.backbone.transformer.resblocks)}

    # ---------------------------------------------------------------- forward
    def encode_image(self, pixel_values: torch.Tensor, prompts: Prompts | None = None,
                     pooled: bool = False) -> ImageFeatures:
        """(C3, C4, C5) of the ResNet; ``pooled`` = the spatial mean of C5 (CoCoOp's image feature)."""
        if prompts is not None and prompts.vision:
            raise NotImplementedError("CRIS has no vision tokens: vision prompts are not supported")
        feats = tuple(self.model.encode_image(pixel_values))
        return ImageFeatures(feats, feats[2].mean(dim=(2, 3)) if pooled else None, tuple(pixel_values.shape[-2:]))

    def decode(self, features: ImageFeatures, text: TextBatch, prompts: Prompts) -> torch.Tensor:
        """Logits (B, 1, H, W) at the input size: text encoder (with ``prompts.text``), neck, decoder, projector."""
        words, state, token_mask = self.model.encode_text(text.input_ids, text.attention_mask, text.eot_index,
                                                          prompts.text or None)
        return self.model.decode(features.maps, words, state, token_mask, features.input_size)


__all__ = ["CRISAdapter", "CLIP_MEAN", "CLIP_STD"]
