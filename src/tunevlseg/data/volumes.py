"""NIfTI volumes: reading, intensity windowing and slicing into 2-D samples.

``load_volume`` reads with nibabel by default. MONAI's
``LoadImage(reader="NibabelReader")`` gives the same array (``reader="monai"``,
checked in the tests) but importing ``monai`` costs 7–10 s per process here
(it pulls in ``transformers``), which matters for preparation workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunevlseg.data.pixels import finite_values
from tunevlseg.data.pixels import window_to_uint8 as window_to_uint8  # re-exported: callers of the old home


def load_volume(path: str | Path, reader: str = "nibabel", canonical: bool = False) -> np.ndarray:
    """Read a NIfTI file into a numpy array in stored axis order (e.g. (H, W, D)).

    ``reader`` is ``"nibabel"`` or ``"monai"`` (MONAI ``LoadImage`` with its
    ``NibabelReader``). ``canonical`` reorients the volume to the closest canonical (RAS+)
    orientation first (nibabel ``as_closest_canonical``; nibabel reader only). Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming the file when it cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"volume file not found: {path}")
    try:
        if reader == "monai":
            from monai.transforms import LoadImage

            data = LoadImage(reader="NibabelReader", image_only=True)(str(path))
            return np.asarray(data.numpy() if hasattr(data, "numpy") else data)
        if reader != "nibabel":
            raise ValueError(f"unknown reader {reader!r} (use 'nibabel' or 'monai')")
        import nibabel as nib

        img = nib.load(str(path))
        return np.asarray((nib.as_closest_canonical(img) if canonical else img).dataobj)
    except Exception as e:  # nibabel/gzip/MONAI raise many different types
        raise ValueError(f"cannot read volume {path}: {type(e).__name__}: {e}") from e


def load_pair(image_path: str | Path, label_path: str | Path, reader: str = "nibabel", warn: bool = True,
              canonical: bool = False):
    """Load an intensity volume and its label volume; check that shapes agree.

    Returns ``(image, labels)`` with integer labels. The error for a shape
    mismatch names both files. NaN/inf intensities become the volume's finite
    minimum with a warning (``warn``; :func:`tunevlseg.data.pixels.finite_values`);
    NaN/inf labels are refused, naming the file and the count.
    """
    image = load_volume(image_path, reader, canonical)
    labels = load_volume(label_path, reader, canonical)
    if image.shape != labels.shape:
        raise ValueError(
            f"shape mismatch: image {image_path} has shape {image.shape} "
            f"but labels {label_path} have shape {labels.shape}"
        )
    if labels.dtype.kind in "fc" and not np.isfinite(labels).all():
        raise ValueError(f"labels {label_path}: {int((~np.isfinite(labels)).sum())} of {labels.size} voxels "
                         f"are NaN or infinite")
    return finite_values(image, Path(image_path), "volume", warn), np.rint(labels).astype(np.int16)


def slice_volume(
    image_vol: np.ndarray,
    label_vol: np.ndarray,
    label: int,
    axis: int = -1,
    empty_fraction: float = 0.0,
    seed: int = 0,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Cut a volume into 2-D slices along ``axis``.

    Returns ``[(slice_index, image2d, mask2d), ...]`` in slice order for every
    slice whose labels contain ``label`` (``mask2d`` = uint8 {0,1} of
    ``label``), plus, when ``empty_fraction`` > 0, that fraction (at least
    one) of the slices without it, picked deterministically from ``seed``.
    A 2-D input is treated as a single slice.
    """
    image_vol, label_vol = np.asarray(image_vol), np.asarray(label_vol)
    if image_vol.shape != label_vol.shape:
        raise ValueError(f"image shape {image_vol.shape} != label shape {label_vol.shape}")
    if image_vol.ndim == 2:
        image_vol, label_vol, axis = image_vol[..., None], label_vol[..., None], -1
    image_vol = np.moveaxis(image_vol, axis, -1)
    masks = np.moveaxis(label_vol, axis, -1) == label
    present = masks.reshape(-1, masks.shape[-1]).any(axis=0)
    keep = set(np.flatnonzero(present).tolist())
    empty = np.flatnonzero(~present)
    if empty_fraction > 0 and empty.size:
        n_empty = min(empty.size, max(1, round(empty_fraction * empty.size)))
        keep.update(np.random.default_rng(seed).choice(empty, n_empty, replace=False).tolist())
    return [(k, image_vol[..., k], masks[..., k].astype(np.uint8)) for k in sorted(keep)]
