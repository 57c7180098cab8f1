"""CLIPSeg with a prompt-aware forward pass.

The stock ``CLIPSegForImageSegmentation.forward`` runs the vision encoder and the
text conditioning under ``torch.no_grad()``, so no gradient could reach prompts
inserted into the encoders. ``CLIPSegAdapter`` re-implements the forward from the
same submodules (embeddings, encoder layers, projections, decoder) and lets a
prompt learner insert tokens per layer:

* text prompts sit right after the start token, are replaced at the input of
  layers 2..d, and shift the end-of-text pooling index by ``n``;
* vision prompts are appended after the patch tokens before the pre-LayerNorm,
  replaced at the input of layers 2..d, and either dropped before the decoder or
  (``Prompts.vision_in_decoder``, the reference's) carried through the decoder's
  token layers and removed only before the reshape to the patch grid; the decoder
  is re-implemented from its submodules for that (``decode``).

With no prompts the adapter reproduces the stock logits (tested to 1e-5).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..prompts.base import ModelDims, Prompts
from .base import ImageFeatures, PromptableModel
from .text_prompts import PromptTokenizer, TextBatch, first_eos, highest_id, insert_prompt, replace_prompt

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_clipseg(name_or_dir: str):
    """Load a CLIPSeg model and its tokenizer from a hub name or a local directory.

    Raises a ``FileNotFoundError`` naming ``name_or_dir`` when neither a local
    folder nor the hub (or its cache) can provide the weights.
    """
    from transformers import AutoTokenizer, CLIPSegForImageSegmentation

    try:
        model = CLIPSegForImageSegmentation.from_pretrained(name_or_dir, attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(name_or_dir)
    except OSError as err:
        raise FileNotFoundError(
            f"cannot load CLIPSeg weights from '{name_or_dir}': not a model folder and not in the "
            f"Hugging Face cache (offline?). Point models.clipseg.weights at a local folder "
            f"or a hub name such as CIDAS/clipseg-rd64-refined. ({err})"
        ) from err
    return model, tokenizer


class CLIPSegAdapter(PromptableModel):
    """Frozen CLIPSeg exposing per-layer prompt hooks for a ``PromptLearner``."""

    def __init__(self, model, tokenizer, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.set_normalization(mean, std)
        cfg = model.config
        self.extract_layers = list(cfg.extract_layers)
        self.max_text_len = cfg.text_config.max_position_embeddings
        eos = cfg.text_config.eos_token_id
        # legacy configs (CIDAS checkpoints, eos_token_id 2): the end token has the highest id
        self.prompt_tokenizer = PromptTokenizer(tokenizer, self.max_text_len, highest_id if eos == 2 else first_eos(eos))
        self.dims = ModelDims(
            text_width=cfg.text_config.hidden_size,
            vision_width=cfg.vision_config.hidden_size,
            image_feature_dim=cfg.projection_dim,
            max_text_depth=cfg.text_config.num_hidden_layers,
            # layers after the last one the decoder reads cannot influence the mask
            max_vision_depth=max(self.extract_layers) + 1,
        )

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, weights: str, options: dict) -> CLIPSegAdapter:
        """CLIPSeg from a hub name (``CIDAS/clipseg-rd64-refined``) or a ``save_pretrained`` folder."""
        return cls(*load_clipseg(weights))

    @classmethod
    def build_standin(cls, arch: dict, tokenizer) -> CLIPSegAdapter:
        from .standin import build_standin

        return cls(build_standin(arch, tokenizer), tokenizer)

    def save(self, out_dir) -> None:
        from .standin import save_standin

        save_standin(self.model, self.tokenizer, out_dir)

    # ------------------------------------------------------------- hooks
    def token_embedding(self) -> nn.Embedding:
        return self.model.clip.text_model.embeddings.token_embedding

    def prompt_layers(self) -> dict[str, list[nn.Module]]:
        return {"text": list(self.model.clip.text_model.encoder.layers),
                "vision": list(self.model.clip.vision_model.encoder.layers)}

    # ---------------------------------------------------------------- encoders
    def encode_text(self, text: TextBatch, prompts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Projected end-of-text feature (B, projection_dim) with optional deep text prompts.

        ``prompts[k]`` has shape (B or 1, n, text_width) and fills the prompt
        slots on the input of layer k+1 (k = 0 is inserted at the embedding).
        """
        tm = self.model.clip.text_model
        device = tm.embeddings.token_embedding.weight.device
        ids = text.input_ids.to(device)
        pad = text.attention_mask.to(device)
        batch = ids.shape[0]
        x = tm.embeddings.token_embedding(ids)
        n = 0
        if prompts:
            n = prompts[0].shape[-2]
            x, pad = insert_prompt(x, pad, prompts[0])
        length = x.shape[1]
        x = x + tm.embeddings.position_embedding(tm.embeddings.position_ids[:, :length])
        mask = _causal_padding_mask(pad, x.dtype)
        for k, layer in enumerate(tm.encoder.layers):
            if prompts and 0 < k < len(prompts):
                x = replace_prompt(x, prompts[k])
            x = layer(x, mask)
        x = tm.final_layer_norm(x)
        pooled = x[torch.arange(batch, device=device), text.eot_index.to(device) + n]
        return self.model.clip.text_projection(pooled)

    def encode_image(self, pixel_values: torch.Tensor, prompts: Prompts | None = None,
                     pooled: bool = False) -> ImageFeatures:
        """Decoder activations and, if asked, the projected pooled feature.

        ``prompts.vision[k]`` has shape (B or 1, n, vision_width): k = 0 is appended after
        the patch tokens before the pre-LayerNorm; k >= 1 replaces those slots on
        the input of layer k+1. The activations hold the patch tokens only, or with
        ``prompts.vision_in_decoder`` also the n prompt tokens; then
        ``prompts.decoder_sees_next_prompt`` stores, at a read layer k < d, prompt k+1 in those
        slots (the reference's in-place overwrite).
        """
        vision = prompts.vision if prompts is not None else None
        in_decoder = bool(vision) and prompts.vision_in_decoder
        next_prompt = in_decoder and prompts.decoder_sees_next_prompt
        vm = self.model.clip.vision_model
        x = vm.embeddings(pixel_values, interpolate_pos_encoding=True)
        batch, tokens = x.shape[:2]
        if vision:
            x = torch.cat([x, vision[0].to(x.dtype).expand(batch, -1, -1)], dim=1)
        x = vm.pre_layrnorm(x)
        last = len(vm.encoder.layers) if pooled else max(self.extract_layers) + 1
        activations = []
        for k, layer in enumerate(vm.encoder.layers[:last]):
            if vision and 0 < k < len(vision):
                x = torch.cat([x[:, :tokens], vision[k].to(x.dtype).expand(batch, -1, -1)], dim=1)
            x = layer(x, None)
            if k in self.extract_layers:
                if not in_decoder:
                    activations.append(x[:, :tokens])
                elif next_prompt and k + 1 < len(vision):  # what the next layer will read
                    activations.append(torch.cat([x[:, :tokens], vision[k + 1].to(x.dtype).expand(batch, -1, -1)], 1))
                else:
                    activations.append(x)
        feature = None
        if pooled:
            feature = self.model.clip.visual_projection(vm.post_layernorm(x[:, 0]))
        return ImageFeatures(tuple(activations), feature)

    def decode(self, features: ImageFeatures, text: TextBatch, prompts: Prompts) -> torch.Tensor:
        """Mask logits (B, 1, H, W) from decoder activations and the text (with ``prompts.text``)."""
        extra = prompts.vision[0].shape[-2] if prompts.vision and prompts.vision_in_decoder else 0
        logits = self.decode_activations(list(features.maps), self.encode_text(text, prompts.text), extra)
        return logits.reshape(logits.shape[0], 1, *logits.shape[-2:])

    def decode_activations(self, activations: list[torch.Tensor], conditional: torch.Tensor,
                           extra_tokens: int = 0) -> torch.Tensor:
        """Mask logits from decoder activations and the conditional embedding.

        CLIPSeg's decoder, step by step from its submodules (``reduces``, FiLM at
        ``conditional_layer``, the token ``layers``, ``transposed_convolution``) so that
        ``extra_tokens`` trailing tokens (vision prompts) can travel through the
        projections, the conditioning and the attention layers; they are removed, with
        the class token, only before the reshape to the patch grid. With none it
        computes exactly what the stock ``model.decoder`` does.
        """
        dec = self.model.decoder
        output = None
        for i, (activation, layer, reduce) in enumerate(zip(activations[::-1], dec.layers, dec.reduces)):
            output = reduce(activation) if output is None else reduce(activation) + output
            if i == dec.conditional_layer:
                output = dec.film_mul(conditional)[:, None] * output + dec.film_add(conditional)[:, None]
            output = layer(output, None)
        grid = output[:, 1 : output.shape[1] - extra_tokens].transpose(1, 2)
        size = math.isqrt(grid.shape[2])
        if size * size != grid.shape[2]:
            raise ValueError(f"decoder: {grid.shape[2]} tokens after removing {extra_tokens} prompt tokens "
                             "do not form a square patch grid")
        return dec.transposed_convolution(grid.reshape(grid.shape[0], grid.shape[1], size, size))


def _causal_padding_mask(padding: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive (B, 1, L, L) mask: a token sees earlier non-padding tokens and itself."""
    length = padding.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=padding.device).tril()
    allowed = causal[None] & padding[:, None, :].bool()
    allowed |= torch.eye(length, dtype=torch.bool, device=padding.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=padding.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


__all__ = ["CLIPSegAdapter", "TextBatch", "load_clipseg", "Prompts"]
