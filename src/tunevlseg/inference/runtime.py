"""Where and how a forward pass runs, shared by training, evaluation and prediction: the device, bf16
autocast, and logits brought back to an image's own size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pick_device(preferred: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if preferred == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preferred)


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA GPUs that support it; a no-op context elsewhere."""
    use = enabled and device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, H, W) or (H, W) logits resized bilinearly to ``size`` (float32, (h, w))."""
    logits = logits.reshape(1, 1, *logits.shape[-2:]).float()
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return logits[0, 0]


__all__ = ["autocast_for", "pick_device", "upsample_logits"]
