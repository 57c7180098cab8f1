"""Training augmentation as a seeded transform: parameters drawn per sample on the CPU, applied batched on the device.

The paper's augmentation protocol: each with probability 0.2, a mild affine (scale 0.98–1.02, shift ±2 %,
rotation ±5°; the mask resampled nearest) and brightness/contrast ±0.1. The parameters of sample
``index`` in ``epoch`` are a pure function of ``(seed, epoch, index)`` — the same draws, in the same
order, as :func:`tunevlseg.data.cache.augment_pair` — so they can be drawn in DataLoader workers,
do not depend on batch composition, and a resumed epoch repeats them. :meth:`Augment.apply` warps
a whole batch at once on whatever device it lives (only the rows whose flags are set are touched).

The frozen-feature cache (:mod:`tunevlseg.features`) stores K augmented *views* per training image,
drawn with :meth:`Augment.draw_view` (the same distribution conditioned on "something applied").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Names and dtypes of the per-sample parameter arrays (collated into batch tensors).
PARAM_KEYS = ("affine", "theta", "photometric", "contrast", "brightness")


@dataclass(frozen=True)
class Augment:
    """The seeded augmentation of one trial (``seed``); ``p`` is the probability of each of the two parts."""

    seed: int = 0
    p: float = 0.2
    max_angle: float = 5.0
    scale: tuple[float, float] = (0.98, 1.02)
    shift: float = 0.04  # ±2 % of the image = ±0.04 in [-1, 1] grid coordinates
    photometric_range: float = 0.1

    @property
    def p_changed(self) -> float:
        """Probability that a sample is changed at all (1 − (1 − p)²: 0.36 at p = 0.2)."""
        return 1.0 - (1.0 - self.p) ** 2

    # ------------------------------------------------------------------ drawing (CPU)
    def params(self, epoch: int, index: int) -> dict:
        """Parameters of sample ``index`` in ``epoch`` (numpy scalars/arrays; see :data:`PARAM_KEYS`)."""
        return self._draw(np.random.default_rng([self.seed, epoch, index]))

    def draw_view(self, view: int, row: int) -> dict:
        """An augmented view (``view`` ≥ 1) of cache row ``row``: the same distribution given that something
        is applied (rejection sampling), seeded by ``(seed, view, row)`` independently of any trial."""
        rng = np.random.default_rng([self.seed, 1_000_003, view, row])
        while True:
            out = self._draw(rng)
            if out["affine"] or out["photometric"]:
                return out

    def pick(self, epoch: int, index: int, views: int) -> int:
        """Which of ``views`` stored views (0-based) a changed sample ``index`` reads in ``epoch``."""
        return int(np.random.default_rng([self.seed, epoch, index, 7]).integers(views))

    def _draw(self, rng: np.random.Generator) -> dict:
        out = identity_params()
        if rng.random() < self.p:  # the order of the draws is that of data.cache.augment_pair
            angle = math.radians(rng.uniform(-self.max_angle, self.max_angle))
            scale = rng.uniform(*self.scale)
            tx, ty = rng.uniform(-self.shift, self.shift, 2)
            cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
            out["affine"] = np.bool_(True)
            out["theta"] = np.array([[cos, -sin, tx], [sin, cos, ty]], dtype=np.float32)
        if rng.random() < self.p:
            out["photometric"] = np.bool_(True)
            out["contrast"] = np.float32(1.0 + rng.uniform(-self.photometric_range, self.photometric_range))
            out["brightness"] = np.float32(rng.uniform(-self.photometric_range, self.photometric_range))
        return out

    # ---------------------------------------------------------------- applying (device)
    @staticmethod
    def apply(images: torch.Tensor, masks: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch in place: ``images`` float (B, 3, H, W) in [0, 1], ``masks`` float (B, 1, H, W);
        ``params`` batched (``affine`` (B,) bool, ``theta`` (B, 2, 3), …) on any device. Only the rows
        whose flags are set are rewritten; returns the two tensors."""
        rows = _rows(params["affine"])
        if rows is not None:
            grid = _grid(params["theta"][rows].to(images.device, torch.float32), images.shape)
            masks[rows] = F.grid_sample(masks[rows], grid, mode="nearest", padding_mode="zeros", align_corners=False)
            images[rows] = F.grid_sample(images[rows], grid, mode="bilinear", padding_mode="border",
                                         align_corners=False)
        rows = _rows(params["photometric"])
        if rows is not None:
            sub = images[rows]
            shape = (-1, 1, 1, 1)
            contrast = params["contrast"][rows].to(images.device, images.dtype).view(shape)
            brightness = params["brightness"][rows].to(images.device, images.dtype).view(shape)
            mean = sub.mean(dim=(1, 2, 3), keepdim=True)
            images[rows] = ((sub - mean) * contrast + mean + brightness).clamp(0.0, 1.0)
        return images, masks

    @staticmethod
    def apply_masks(masks: torch.Tensor, params: dict) -> torch.Tensor:
        """Only the geometric part, in place on (B, 1, H, W) masks (nearest, zeros outside)."""
        rows = _rows(params["affine"])
        if rows is not None:
            grid = _grid(params["theta"][rows].to(masks.device, torch.float32), masks.shape)
            masks[rows] = F.grid_sample(masks[rows], grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return masks


def identity_params() -> dict:
    """The parameters of an unchanged sample."""
    return dict(affine=np.bool_(False), theta=np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32),
                photometric=np.bool_(False), contrast=np.float32(1.0), brightness=np.float32(0.0))


def changed(params: dict) -> torch.Tensor:
    """(B,) bool: which samples of a batch the parameters change."""
    return params["affine"].bool() | params["photometric"].bool()


def _rows(flags: torch.Tensor) -> torch.Tensor | None:
    rows = flags.bool().nonzero().flatten()
    return rows if rows.numel() else None


def _grid(theta: torch.Tensor, shape) -> torch.Tensor:
    """Sampling grid of the (n, 2, 3) ``theta`` for images of ``shape`` (B, C, H, W); one per row."""
    return F.affine_grid(theta, (len(theta), 1, *shape[2:]), align_corners=False)


__all__ = ["Augment", "PARAM_KEYS", "changed", "identity_params"]
