"""Per-image Dice and IoU at a threshold, with the benchmark's empty-mask convention."""

from __future__ import annotations

import numpy as np
import torch

from ..inference.runtime import upsample_logits


def dice_iou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice and IoU per image for binary masks of shape (B, ...).

    An empty target with an empty prediction scores 1 (both metrics); an empty
    target with any predicted pixel scores 0.
    """
    pred = pred.reshape(pred.shape[0], -1).bool()
    target = target.reshape(target.shape[0], -1).bool()
    inter = (pred & target).sum(1).double()
    total = pred.sum(1).double() + target.sum(1).double()
    union = (pred | target).sum(1).double()
    empty = total == 0
    dice = torch.where(empty, torch.ones_like(inter), 2 * inter / total.clamp_min(1))
    iou = torch.where(empty, torch.ones_like(inter), inter / union.clamp_min(1))
    return dice, iou


def logits_to_mask(logits: torch.Tensor, size: tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """Resize (1, H, W) or (H, W) logits bilinearly to ``size`` and threshold the sigmoid."""
    return torch.sigmoid(upsample_logits(logits, size)) > threshold


def summarize(values: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation, NaN-safe for an empty array."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std())
