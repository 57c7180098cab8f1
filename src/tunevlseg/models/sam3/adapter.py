"""SAM 3 (``transformers.Sam3Model``) behind the same prompt-learner interface as CLIPSeg and CRIS.

* text prompts: SAM 3's text encoder is CLIP's text transformer; prompts enter it as in CLIPSeg
  (:mod:`..text_prompts`): inserted after the start token at the embeddings (padding mask grown by n),
  replaced at the input of layers 2..d. SAM 3 reads every token of the text (``text_projection`` of the
  whole last hidden state, masked by the padding mask in the DETR encoder, decoder, scoring and mask
  decoder), not one pooled token, so the n context tokens are seen by the detector directly;
* no vision prompts (``max_vision_depth`` 0): the ViT attends within 24 × 24 windows (global attention only
  in 4 of 32 layers) over a (B, H, W, C) grid with 2-D rotary positions: an extra token has no grid cell,
  no rotary position and no window (README "SAM 3": why VPT, MaPLe and Shared Attention are not offered);
* image features (the frozen-feature cache): the ViT's output grid (B, width, H/14, W/14) — the FPN neck,
  a few convolutions, runs in :meth:`decode` — and, pooled, its spatial mean (CoCoOp's image feature);
* mask logits: the mask decoder's ``semantic_seg`` (B, 1, H/14·4, W/14·4), upsampled bilinearly to the
  input size (README "SAM 3": why not the presence-weighted union of the instance masks).

The frozen model is kept in eval mode whatever ``train()`` is called with (its DETR dropout off), unless
``frozen=False``: pretraining the demo stand-in end to end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...prompts.base import ModelDims, Prompts
from ..base import ImageFeatures, PromptableModel
from ..text_prompts import PromptTokenizer, TextBatch, first_eos, insert_prompt, replace_prompt
from .loading import PROCESSOR_DEFAULTS


class Sam3Adapter(PromptableModel):
    """Frozen SAM 3 exposing per-layer text prompt hooks for a ``PromptLearner``."""

    def __init__(self, model, tokenizer, preprocessing: dict | None = None, frozen: bool = True):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.frozen = frozen
        pre = {**PROCESSOR_DEFAULTS, **(preprocessing or {})}
        self.set_normalization(tuple(pre["image_mean"]), tuple(pre["image_std"]))
        self.image_size = int(model.config.image_size)
        text = model.config.text_config
        self.max_text_len = text.max_position_embeddings
        self.prompt_tokenizer = PromptTokenizer(tokenizer, self.max_text_len, first_eos(tokenizer.eos_token_id))
        self.dims = ModelDims(text_width=text.hidden_size, vision_width=None,
                              image_feature_dim=model.config.vision_config.backbone_config.hidden_size,
                              max_text_depth=text.num_hidden_layers, max_vision_depth=0)
        if frozen:
            self.model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, weights: str, options: dict) -> Sam3Adapter:
        """SAM 3 from a hub name (``facebook/sam3``, gated) or a folder; ``image_size`` (None: the processor's)."""
        from .loading import load_sam3

        return cls(*load_sam3(weights, options.get("image_size")))

    @classmethod
    def build_standin(cls, arch: dict, tokenizer) -> Sam3Adapter:
        from .loading import build_sam3

        return cls(build_sam3(arch, tokenizer), tokenizer, {"size": arch["image_size"]}, frozen=False)

    def save(self, out_dir) -> None:
        from .loading import save_sam3_folder

        save_sam3_folder(self.model, self.tokenizer, out_dir, {"image_mean": self.mean.flatten().tolist(),
                                                               "image_std": self.std.flatten().tolist(),
                                                               "size": self.image_size})

    # ------------------------------------------------------------- hooks
    def token_embedding(self) -> nn.Embedding:
        return self.model.text_encoder.text_model.embeddings.token_embedding

    def prompt_layers(self) -> dict[str, list[nn.Module]]:
        return {"text": list(self.model.text_encoder.text_model.encoder.layers)}

    # ---------------------------------------------------------------- forward
    def encode_text(self, text: TextBatch, prompts: list[torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(text features (B, L + n, hidden), padding mask (B, L + n)): ``Sam3Model.get_text_features`` with
        ``prompts[k]`` (B or 1, n, text_width) filling the n slots after the start token at layer k+1's input."""
        from transformers.masking_utils import create_causal_mask

        tm = self.model.text_encoder.text_model
        device = tm.embeddings.token_embedding.weight.device
        ids, pad = text.input_ids.to(device), text.attention_mask.to(device)
        x = tm.embeddings.token_embedding(ids)
        if prompts:
            x, pad = insert_prompt(x, pad, prompts[0])
        length = x.shape[1]
        if length > self.max_text_len:
            raise ValueError(f"SAM 3 text: {length} tokens (context included) exceed its {self.max_text_len} positions")
        x = x + tm.embeddings.position_embedding(tm.embeddings.position_ids[:, :length])
        mask = create_causal_mask(config=tm.config, inputs_embeds=x, attention_mask=pad, past_key_values=None)
        for k, layer in enumerate(tm.encoder.layers):
            if prompts and 0 < k < len(prompts):
                x = replace_prompt(x, prompts[k])
            x = layer(x, mask, is_causal=True)
        return self.model.text_projection(tm.final_layer_norm(x)), pad

    def encode_image(self, pixel_values: torch.Tensor, prompts: Prompts | None = None,
                     pooled: bool = False) -> ImageFeatures:
        """The ViT's output grid (B, width, h, w); ``pooled`` = its spatial mean (B, width)."""
        if prompts is not None and prompts.vision:
            raise NotImplementedError("SAM 3: vision prompts are not supported (windowed ViT with rotary positions)")
        patch = self.model.config.vision_config.backbone_config.patch_size
        size = tuple(pixel_values.shape[-2:])
        if size != (self.image_size, self.image_size):
            raise ValueError(f"SAM 3 input {size[0]}x{size[1]}: this model is configured for "
                             f"{self.image_size}x{self.image_size} (models.sam3.image_size, a multiple of {patch})")
        tokens = self.model.vision_encoder.backbone(pixel_values).last_hidden_state  # (B, h·w, width)
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, size[0] // patch, size[1] // patch)
        return ImageFeatures((grid,), grid.mean(dim=(2, 3)) if pooled else None, size)

    def vision_embeds(self, features: ImageFeatures):
        """``Sam3Model.get_vision_features``' output from the cached ViT grid (the FPN neck runs here)."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        grid = features.maps[0]
        fpn, positions = self.model.vision_encoder.neck(grid.to(self.model.text_projection.weight.dtype))
        return Sam3VisionEncoderOutput(last_hidden_state=grid.flatten(2).transpose(1, 2), fpn_hidden_states=fpn,
                                       fpn_position_encoding=positions)

    def outputs(self, features: ImageFeatures, text: TextBatch, prompts: Prompts):
        """``Sam3Model``'s full output (instance masks, scores, presence, ``semantic_seg``) for prompted text."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        words, pad = self.encode_text(text, prompts.text)
        return self.model(vision_embeds=self.vision_embeds(features),
                          text_embeds=BaseModelOutputWithPooling(pooler_output=words), attention_mask=pad)

    def decode(self, features: ImageFeatures, text: TextBatch, prompts: Prompts) -> torch.Tensor:
        """Mask logits (B, 1, H, W) at the input size: ``semantic_seg``, upsampled bilinearly."""
        semantic = self.outputs(features, text, prompts).semantic_seg
        size = features.input_size or (self.image_size, self.image_size)
        return F.interpolate(semantic, size=size, mode="bilinear", align_corners=False)


__all__ = ["Sam3Adapter"]
