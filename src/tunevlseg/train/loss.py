"""The training loss: soft Dice + binary cross-entropy on (B, 1, H, W) logits.

It computes what ``monai.losses.DiceCELoss(sigmoid=True, lambda_dice=…, lambda_ce=…)`` computes with
its other defaults (per-sample Dice over the spatial dimensions, ``smooth_nr = smooth_dr = 1e-5``,
mean over the batch; ``BCEWithLogitsLoss`` for one channel), and ``tests/unit/train/test_loss.py``
holds it equal to MONAI's loss and gradients. It is written out because ``import monai`` imports
every MONAI submodule (networks, apps, bundles and their scipy/transformers imports): 5.3 s of the
8.3 s a `tune`/`retrain` job spent importing on a 2-core machine, paid by every job of the grid.
MONAI stays the reference in the test and reads volumes (``load_volume(reader="monai")``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DiceCELoss(nn.Module):
    """``lambda_dice`` · (1 − soft Dice) + ``lambda_ce`` · BCE, on logits and masks of shape (B, 1, *spatial)."""

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5):
        super().__init__()
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0, got {lambda_dice}, {lambda_ce}")
        self.lambda_dice, self.lambda_ce = float(lambda_dice), float(lambda_ce)
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() < 3 or logits.shape[1] != 1 or target.shape != logits.shape:
            raise ValueError(f"DiceCELoss needs logits and masks of one shape (B, 1, H[, W…]), got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        target = target.to(logits.dtype)
        prob = torch.sigmoid(logits)
        spatial = tuple(range(2, logits.dim()))
        intersection = (prob * target).sum(spatial)
        denominator = prob.sum(spatial) + target.sum(spatial)
        dice = 1.0 - (2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return self.lambda_dice * dice.mean() + self.lambda_ce * bce


__all__ = ["DiceCELoss"]
