"""How image pixels are read: the one image reader and the intensity rules it shares with NIfTI volumes.

- **8-bit images** (Pillow modes ``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ...; 16-bit colour PNGs,
  which Pillow reads as 8-bit ``RGB``) become RGB exactly as Pillow converts them.
- **Wider grey images** (16-bit PNG/TIFF, 32-bit integer or float TIFF) are scaled to 0..255 by
  their own finite min–max, the rule NIfTI volumes follow without a ``window`` (per volume): a
  12-bit scan stored in 16 bits uses the whole 8-bit range; a constant image becomes 0.
- **Non-finite values** (NaN, ±inf: float TIFF, NIfTI) are replaced by the file's finite minimum
  (background), with a warning naming the file and the count; a file without one finite value is
  refused. NaN or inf in a label volume is refused (no label can be read from it).
- **Size**: an image, or a volume's slices, smaller than :data:`MIN_SIDE` px on a side is refused,
  naming the file (the smallest prepared size is 8: such an image holds less than one cache pixel).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tunevlseg.data.masks import open_image

log = logging.getLogger(__name__)

MIN_SIDE = 8  # px: smaller images (or volume slices) are refused


def check_size(shape: tuple[int, ...], path: Path, what: str = "image") -> None:
    """``ValueError`` naming ``path`` when the (H, W) of ``shape`` is below :data:`MIN_SIDE` on a side."""
    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"{what} {path} is {w}x{h} px, below the minimum of {MIN_SIDE} px on a side "
                         f"(a thumbnail or a corrupt file?)")


def finite_values(values: np.ndarray, path: Path, what: str = "image", warn: bool = True) -> np.ndarray:
    """``values`` with NaN and ±inf replaced by their finite minimum, logging a warning with the count.

    Integer arrays are returned unchanged. ``ValueError`` naming the file when no value is finite.
    ``warn`` = False stays silent (a second pass over the same file).
    """
    values = np.asarray(values)
    if values.dtype.kind not in "fc":
        return values
    bad = ~np.isfinite(values)
    n_bad = int(bad.sum())
    if not n_bad:
        return values
    if n_bad == values.size:
        raise ValueError(f"{what} {path}: all {n_bad} values are NaN or infinite")
    floor = values[~bad].min()
    if warn:
        log.warning("%s %s: %d of %d values are NaN or infinite; set to the finite minimum %g",
                    what, path, n_bad, values.size, floor)
    return np.where(bad, floor, values)


def window_to_uint8(volume: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Map intensities to uint8: min–max over the finite values, or a fixed ``(lo, hi)`` window.

    Non-finite values map like the finite minimum (:func:`finite_values` is the warned rule).
    """
    v = np.asarray(volume, dtype=np.float32)
    finite = np.isfinite(v)
    if not finite.all():
        v = np.where(finite, v, v[finite].min() if finite.any() else np.float32(0))
    lo, hi = (float(v.min()), float(v.max())) if window is None else map(float, window)
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    return np.round(np.clip((v - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def read_image(path: Path, warn: bool = True) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB by the rules above; errors name the file."""
    im = open_image(path, "image")
    check_size((im.height, im.width), path)
    if im.mode == "F" or im.mode.startswith("I"):  # 16/32-bit integer or float grey
        grey = window_to_uint8(finite_values(np.asarray(im), path, "image", warn))
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))
