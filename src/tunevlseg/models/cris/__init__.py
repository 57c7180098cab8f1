"""CRIS implemented in plain PyTorch (no maintained package exists)."""

from .adapter import CLIP_MEAN, CLIP_STD, CRISAdapter
from .model import CRIS, CLIPBackbone, CRISConfig, load_clip_weights, load_cris_checkpoint

__all__ = ["CRISAdapter", "CLIP_MEAN", "CLIP_STD", "CRIS", "CRISConfig", "CLIPBackbone", "load_clip_weights", "load_cris_checkpoint"]
