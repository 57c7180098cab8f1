"""CRIS (Wang et al., CVPR 2022): CLIP RN50/RN101 + multi-modal FPN + transformer decoder + projector.

Module and parameter names mirror the reference implementation (DerrickWang005/CRIS.pytorch,
``model/segmenter.py``): ``backbone`` is the whole CLIP model (``backbone.visual.*``,
``backbone.token_embedding``, ``backbone.positional_embedding``, ``backbone.transformer.resblocks.*``,
``backbone.ln_final``, ``backbone.text_projection``, ``backbone.logit_scale``), then ``neck.*``,
``decoder.*`` and ``proj.*`` — so a community CRIS checkpoint loads strictly.

Differences from the reference, all deliberate:
* the text tower takes an explicit end-token index (the reference uses ``ids.argmax``, valid
  only for CLIP's vocabulary) and a padding mask (the reference derives it from ``ids == 0``);
* the 104×104 logits are upsampled to the input size inside ``forward`` (bicubic,
  ``align_corners=True``, the mode of the reference test script, which applies it after the sigmoid);
* dropout defaults to 0 (prompt tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import math
import pickle

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ModifiedResNet
from .decoder import TransformerDecoder
from .neck import FPN
from .projector import Projector
from .text import TextEncoder
from .torchscript import is_torchscript, read_torchscript_state_dict


@dataclass
class CRISConfig:
    """All sizes of a CRIS model; defaults are CRIS-R50 at 416."""

    image_size: int = 416
    clip_resolution: int = 224          # CLIP's pretraining resolution (fixes the attnpool pos-embedding grid)
    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    vision_heads: int | None = None     # default width·32/64, as CLIP
    embed_dim: int = 1024               # CLIP joint embedding: C5 channels and sentence feature
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    fpn_out: tuple[int, int, int] = (256, 512, 1024)
    num_layers: int = 3
    num_head: int = 8
    dim_ffn: int = 2048
    dropout: float = 0.0
    kernel_size: int = 3
    upsample_mode: str = "bicubic"

    @classmethod
    def rn50(cls, **kw) -> "CRISConfig":
        return cls(**kw)

    @classmethod
    def rn101(cls, **kw) -> "CRISConfig":
        kw.setdefault("layers", (3, 4, 23, 3))
        kw.setdefault("embed_dim", 512)
        return cls(**kw)

    @property
    def vis_dim(self) -> int:
        return self.fpn_out[1]


class CLIPBackbone(TextEncoder):
    """The CLIP model as CRIS keeps it: the text tower's parameters at top level plus ``visual``."""

    def __init__(self, cfg: CRISConfig):
        super().__init__(cfg.embed_dim, cfg.context_length, cfg.vocab_size, cfg.text_width, cfg.text_heads,
                         cfg.text_layers)
        heads = cfg.vision_heads or cfg.width * 32 // 64
        self.visual = ModifiedResNet(cfg.layers, cfg.embed_dim, heads, cfg.clip_resolution, cfg.width)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def encode_image(self, images: torch.Tensor):
        return self.visual(images)


class CRIS(nn.Module):
    def __init__(self, cfg: CRISConfig | None = None):
        super().__init__()
        cfg = cfg or CRISConfig()
        if cfg.text_width != cfg.vis_dim:
            raise ValueError(f"text_width {cfg.text_width} must equal the decoder width fpn_out[1] = {cfg.vis_dim}")
        self.cfg = cfg
        self.backbone = CLIPBackbone(cfg)
        fpn_in = (cfg.width * 8, cfg.width * 16, cfg.embed_dim)
        self.neck = FPN(in_channels=fpn_in, out_channels=cfg.fpn_out)
        self.decoder = TransformerDecoder(cfg.num_layers, cfg.vis_dim, cfg.num_head, cfg.dim_ffn, cfg.dropout)
        self.proj = Projector(cfg.embed_dim, cfg.vis_dim // 2, cfg.kernel_size)

    def encode_image(self, images: torch.Tensor):
        """(C3, C4, C5) from normalised images."""
        return self.backbone.encode_image(images)

    def encode_text(self, ids, padding_mask, eot_index, prompts=None):
        """(word features (B, L+n, D), sentence feature (B, embed_dim), padding mask (B, L+n), True = token)."""
        return self.backbone.encode_text(ids, padding_mask, eot_index, prompts)

    def decode(self, feats, words: torch.Tensor, state: torch.Tensor, token_mask: torch.Tensor,
               size: tuple[int, int] | None = None) -> torch.Tensor:
        """Neck → decoder → projector; logits (B, 1, H, W) upsampled to ``size`` when given."""
        fq = self.neck(feats, state)
        fq = self.decoder(fq, words, ~token_mask.bool())
        pred = self.proj(fq, state)
        if size is not None and tuple(pred.shape[-2:]) != tuple(size):
            align = True if self.cfg.upsample_mode in ("bicubic", "bilinear") else None
            pred = F.interpolate(pred, size=size, mode=self.cfg.upsample_mode, align_corners=align)
        return pred

    def forward(self, images: torch.Tensor, ids: torch.Tensor, padding_mask: torch.Tensor, eot_index: torch.Tensor,
                text_prompts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (B, 1, H, W) for normalised images (B, 3, H, W) and tokenised text."""
        feats = self.encode_image(images)
        words, state, token_mask = self.encode_text(ids, padding_mask, eot_index, text_prompts)
        return self.decode(feats, words, state, token_mask, images.shape[-2:])


# ------------------------------------------------------------------------------------------ weights
_CLIP_META_KEYS = ("input_resolution", "context_length", "vocab_size")


def _read_state_dict(path) -> dict[str, torch.Tensor]:
    """State dict from a TorchScript archive (OpenAI ``RN50.pt``, read without running its code) or a
    plain ``torch.save`` file (``weights_only``)."""
    if is_torchscript(path):
        return read_torchscript_state_dict(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not a weights file torch can read safely ({err})") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    return obj


def _strict_load(module: nn.Module, state: dict[str, torch.Tensor], path, allow_missing=()) -> None:
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state and not k.startswith(tuple(allow_missing)))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        lines = [f"checkpoint {path} does not match the model:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): " + "; ".join(shapes))
        raise ValueError("\n".join(lines))
    module.load_state_dict(state, strict=not allow_missing)


def load_clip_weights(model: CRIS, path) -> None:
    """Load OpenAI CLIP weights (``RN50.pt`` TorchScript archive or a plain state dict) into ``model.backbone``.

    Every CLIP key must match; only CRIS's new ``visual.attnpool.connect.*`` branch may be absent.
    CLIP's 77 text positions are truncated to ``context_length`` when that is shorter.
    """
    state = {k: v for k, v in _read_state_dict(path).items() if k not in _CLIP_META_KEYS}
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    pos = state.get("positional_embedding")
    length = model.backbone.positional_embedding.shape[0]
    if pos is not None and pos.shape[0] > length:
        state["positional_embedding"] = pos[:length]
    _strict_load(model.backbone, state, path, allow_missing=("visual.attnpool.connect.",))


def load_cris_checkpoint(model: CRIS, path) -> None:
    """Load a CRIS checkpoint: ``{"state_dict": {"module.…": …}}`` (DataParallel) or a plain state dict.

    The ``module.`` prefix is stripped; keys must match exactly (ValueError listing missing and
    unexpected keys otherwise).
    """
    state = _read_state_dict(path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    _strict_load(model, state, path)
