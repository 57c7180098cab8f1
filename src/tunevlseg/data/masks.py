"""Mask rules: how a samples.csv row's ``mask`` entry becomes a binary (H, W) mask.

The optional ``mask_rule`` column of samples.csv lets a dataset's index point at
the files exactly as released; the conversion happens in the (parallel)
preparation workers, so no derived mask files are written.

=====================  =============================================================
rule                   meaning
=====================  =============================================================
``""`` / ``binary``    a {0,255} or {0,1} mask; anything else is an error
``threshold:T``        grey level > T (JPEG masks, e.g. Kvasir: T = 127)
``channels:T:0,1``     any listed RGB channel > T (BKAI: red ∪ green)
``label:V``            label/palette image == V (VOC palette index, Cityscapes labelId)
``or``                 ``mask`` lists binary mask files separated by ``;``: their union (BUSI)
``empty``              no foreground (BUSI "normal" without a mask file)
``polygons``           ``mask`` is a JSON file ``{"size": [h, w], "polygons": [[[x, y], ...], ...]}``
=====================  =============================================================

A thresholded mask whose largest value is 1 is a {0, 1} label map (masks saved
as 0/1 instead of 0/255): foreground = 1, whatever ``T``.
Otherwise, thresholded masks must have at least one pixel clearly on one side of the
threshold (farther than :data:`MARGIN` grey levels from it): a file whose
values all lie within ``T ± MARGIN`` (e.g. uniformly 128) says nothing about
foreground or background and is refused, naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MARGIN = 16  # grey levels: a thresholded mask needs a pixel farther than this from its threshold


def open_image(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image; ``FileNotFoundError``/``ValueError`` naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        im = Image.open(path)
        im.load()
        return im
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
        raise ValueError(f"{what} {path} is unreadable or truncated: {type(e).__name__}: {e}") from e


def binary_mask(path: Path) -> np.ndarray:
    """Decode a binary mask file (values {0,255} or {0,1}) to (H, W) uint8 {0,1}."""
    im = open_image(path, "mask")
    if im.mode not in ("L", "P", "I", "I;16", "1"):
        im = im.convert("L")
    arr = np.asarray(im)
    values = set(np.unique(arr).tolist())
    if not (values <= {0, 255} or values <= {0, 1} or values <= {False, True}):
        raise ValueError(f"mask {path} is not binary: values {sorted(values)[:10]} (expected {{0,255}} or {{0,1}})")
    return (arr > 0).astype(np.uint8)


def label_image(path: Path) -> np.ndarray:
    """Decode a palette or grey label image (VOC, Cityscapes) to its (H, W) values; errors name the file."""
    im = open_image(path, "label image")
    if im.mode not in ("P", "L", "I", "I;16"):
        raise ValueError(f"label image {path} has mode {im.mode}; expected a palette or grey label image")
    return np.asarray(im)


def rasterise_polygons(polygons: list, size: tuple[int, int]) -> np.ndarray:
    """Fill ``[[[x, y], ...], ...]`` polygons into an (h, w) uint8 {0,1} mask."""
    h, w = size
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        pts = [(float(x), float(y)) for x, y in poly]
        if len(pts) >= 3:
            draw.polygon(pts, fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8)


def load_mask(raw_dir: Path, mask_entry: str, rule: str, image_shape: tuple[int, int],
              memo: dict | None = None) -> np.ndarray:
    """Apply ``rule`` to the row's ``mask`` entry; returns (H, W) uint8 {0,1}.

    ``memo`` (optional dict) keeps decoded label images for rows that share one
    (one sample per class: VOC, Cityscapes).

    Errors name the file: unknown rule, non-binary mask under a binary rule,
    unreadable file, or a mask whose size differs from the image.
    """
    rule = rule or "binary"
    kind, _, arg = rule.partition(":")
    if kind == "empty":
        return np.zeros(image_shape, np.uint8)
    if kind == "or":
        paths = [raw_dir / p for p in mask_entry.split(";") if p]
        if not paths:
            return np.zeros(image_shape, np.uint8)
        parts = [_check_size(binary_mask(p), p, image_shape) for p in paths]
        return np.any(parts, axis=0).astype(np.uint8)
    path = raw_dir / mask_entry
    if kind == "binary":
        mask = binary_mask(path)
    elif kind == "threshold":
        mask = _threshold(np.asarray(open_image(path, "mask").convert("L")), int(arg), path)
    elif kind == "channels":
        threshold, channels = arg.split(":")
        rgb = np.asarray(open_image(path, "mask").convert("RGB"))
        mask = _threshold(rgb[..., [int(c) for c in channels.split(",")]].max(-1), int(threshold), path)
    elif kind == "label":
        memo = {} if memo is None else memo
        if ("labels", path) not in memo:
            memo[("labels", path)] = label_image(path)
        mask = (memo[("labels", path)] == int(arg)).astype(np.uint8)
    elif kind == "polygons":
        if not path.is_file():
            raise FileNotFoundError(f"polygon file not found: {path}")
        try:
            spec = json.loads(path.read_text())
            mask = rasterise_polygons(spec["polygons"], tuple(spec["size"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"polygon file {path} is malformed: {type(e).__name__}: {e}") from e
    else:
        raise ValueError(f"unknown mask_rule {rule!r} for mask {path}")
    return _check_size(mask, path, image_shape)


def _threshold(values: np.ndarray, threshold: int, path: Path) -> np.ndarray:
    """``values > threshold`` as uint8 {0,1} (``values == 1`` for a {0,1} label map, max 1);
    ``ValueError`` when no value is clearly on either side."""
    lo, hi = int(values.min()), int(values.max())
    if hi == 1:
        return (values == 1).astype(np.uint8)
    if lo >= threshold - MARGIN and hi <= threshold + MARGIN:
        raise ValueError(f"mask {path}: every value lies in [{lo}, {hi}], within {MARGIN} of the threshold "
                         f"{threshold}: no pixel is clearly foreground or background (a blank or corrupt mask?)")
    return (values > threshold).astype(np.uint8)


def _check_size(mask: np.ndarray, path: Path, image_shape: tuple[int, int]) -> np.ndarray:
    if mask.shape != tuple(image_shape):
        raise ValueError(
            f"size mismatch: mask {path} is {mask.shape[1]}x{mask.shape[0]} "
            f"but its image is {image_shape[1]}x{image_shape[0]}"
        )
    return mask
