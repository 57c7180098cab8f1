"""Raw layout -> grouped split -> resized uint8 cache + manifest.

Raw layout (every raw dataset folder, real or synthetic): ``samples.csv`` with
columns ``id,image,mask,phrase,group`` (paths relative to the folder; an
optional ``label`` column marks NIfTI volumes, ``label`` = target label; an
optional ``split`` column with train/val/test fixes an official split).
2-D rows point to an RGB image and a 0/255 (or 0/1) mask; volume rows point to
``.nii``/``.nii.gz`` intensity and label volumes, sliced along the last axis.

Cache (``out_dir``, built atomically): ``{split}_images.npy`` (N,S,S,3) uint8,
``{split}_masks.npy`` (N,S,S) uint8 {0,1}, ``test_masks_original.npz`` (id ->
original-size mask), ``manifest.csv`` (row order = array order within a split)
and ``meta.json``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from tunevlseg.data.atomic import atomic_dir
from tunevlseg.data.volumes import load_pair, slice_volume, window_to_uint8

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("id", "image", "mask", "phrase", "group")
MANIFEST_COLUMNS = ["id", "split", "source_image", "source_mask", "content_hash", "orig_h", "orig_w", "group"]
PROMPT_KEYS = ["p0", "p1"]


def read_samples(raw_dir: Path) -> list[dict]:
    """Read and check ``raw_dir/samples.csv``; returns its rows as dicts."""
    path = Path(raw_dir) / "samples.csv"
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}: a raw dataset folder needs samples.csv")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks columns {missing} (has {reader.fieldnames})")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path} has no samples")
    dup = [k for k, c in Counter(r["id"] for r in rows).items() if c > 1]
    if dup:
        raise ValueError(f"{path}: duplicate ids {dup[:5]}")
    return rows


def assign_splits(rows: list[dict], fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, str]:
    """Map each group to a split, deterministically from ``seed``; a group never spans splits.

    Groups are shuffled and cut where the cumulative row count crosses the
    fractions (by each group's midpoint). A non-empty ``split`` column in
    samples.csv overrides this (official splits); it must be consistent per group.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    given = {r["group"]: r.get("split") or "" for r in rows}
    if any(given.values()):
        out: dict[str, str] = {}
        for r in rows:
            s = r.get("split") or ""
            if s not in SPLITS or out.setdefault(r["group"], s) != s:
                raise ValueError(f"samples.csv row {r['id']}: bad or inconsistent split {s!r} for group {r['group']}")
        return out
    counts = Counter(r["group"] for r in rows)
    groups = sorted(counts)
    bounds = np.cumsum(fractions) * len(rows)
    out, cum = {}, 0
    for gi in np.random.default_rng(seed).permutation(len(groups)):
        g = groups[gi]
        mid = cum + counts[g] / 2
        out[g] = SPLITS[min(int(np.searchsorted(bounds, mid - 1e-9)), 2)]
        cum += counts[g]
    return out


def _open_image(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        im = Image.open(path)
        im.load()
        return im
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
        raise ValueError(f"{what} {path} is unreadable or truncated: {type(e).__name__}: {e}") from e


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; clear error naming the file."""
    return np.asarray(_open_image(path, "image").convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    """Decode a binary mask file (values {0,255} or {0,1}) to (H, W) uint8 {0,1}."""
    im = _open_image(path, "mask")
    if im.mode not in ("L", "P", "I", "I;16"):
        im = im.convert("L")
    arr = np.asarray(im)
    values = np.unique(arr)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        raise ValueError(f"mask {path} is not binary: values {values[:10].tolist()} (expected {{0,255}} or {{0,1}})")
    return (arr > 0).astype(np.uint8)


def content_hash(pixels: np.ndarray) -> str:
    """sha256 of decoded pixels (dtype and shape included)."""
    a = np.ascontiguousarray(pixels)
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) with bilinear (antialiased when shrinking)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) {0,1} -> (size, size) {0,1} with nearest neighbour (stays binary)."""
    if mask.shape == (size, size):
        return mask
    return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))


def _sample(row, sid, image, mask, raw_hash, size, keep_original) -> dict:
    return {
        "id": sid,
        "group": row["group"],
        "phrase": row["phrase"],
        "source_image": row["image"],
        "source_mask": row["mask"],
        "content_hash": raw_hash,
        "orig_h": mask.shape[0],
        "orig_w": mask.shape[1],
        "image": resize_image(image, size),
        "mask": resize_mask(mask, size),
        "original": mask if keep_original else None,
    }


def _load_task(task) -> list[dict]:
    """Decode one samples.csv row into cache-ready samples (runs in pool workers)."""
    raw_dir, row, size, keep_original, opts = task
    image_path, mask_path = raw_dir / row["image"], raw_dir / row["mask"]
    if (row.get("label") or "") == "" and not row["image"].endswith((".nii", ".nii.gz")):
        image, mask = read_image(image_path), read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"size mismatch: image {image_path} is {image.shape[1]}x{image.shape[0]} "
                f"but mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}"
            )
        return [_sample(row, row["id"], image, mask, content_hash(image), size, keep_original)]
    volume, labels = load_pair(image_path, mask_path)
    if volume.ndim not in (2, 3):
        raise ValueError(f"volume {image_path} has shape {volume.shape}; expected 2-D or 3-D")
    volume = volume if volume.ndim == 3 else volume[..., None]
    label = int(row.get("label") or 1)
    seed = zlib.crc32(f"{opts['seed']}:{row['id']}".encode())
    scaled = window_to_uint8(volume, opts["window"])
    out = []
    for k, image2d, mask2d in slice_volume(scaled, labels.reshape(volume.shape), label, -1, opts["empty_fraction"], seed):
        rgb = np.repeat(image2d[..., None], 3, axis=-1)
        out.append(_sample(row, f"{row['id']}_s{k:02d}", rgb, mask2d, content_hash(volume[..., k]), size, keep_original))
    return out


class _CacheWriter:
    """Streams samples into per-split append-only files inside the cache folder."""

    def __init__(self, folder: Path, size: int):
        self.folder, self.size = folder, size
        self.files = {s: (open(folder / f"{s}_images.raw", "wb"), open(folder / f"{s}_masks.raw", "wb")) for s in SPLITS}
        self.originals = zipfile.ZipFile(folder / "test_masks_original.npz", "w", zipfile.ZIP_DEFLATED)
        self.sizes = dict.fromkeys(SPLITS, 0)
        self.manifest: list[dict] = []

    def add(self, smp: dict, split: str) -> None:
        self.files[split][0].write(smp["image"].tobytes())
        self.files[split][1].write(smp["mask"].tobytes())
        if smp["original"] is not None:
            with self.originals.open(f"{smp['id']}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, smp["original"])
        self.sizes[split] += 1
        prompts = {"p0": "", "p1": smp["phrase"].rstrip(".") + "."}
        self.manifest.append({**{k: smp[k] for k in MANIFEST_COLUMNS if k != "split"}, "split": split, **prompts})

    def close(self) -> None:
        for fi, fm in self.files.values():
            fi.close()
            fm.close()
        self.originals.close()

    def finish(self) -> str:
        """Write the .npy arrays and manifest.csv; returns the manifest's sha256."""
        ids = [m["id"] for m in self.manifest]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate sample ids: {[k for k, c in Counter(ids).items() if c > 1][:5]}")
        for s in SPLITS:
            n = self.sizes[s]
            _finish_array(self.folder / f"{s}_images.raw", self.folder / f"{s}_images.npy", (n, self.size, self.size, 3))
            _finish_array(self.folder / f"{s}_masks.raw", self.folder / f"{s}_masks.npy", (n, self.size, self.size))
        with open(self.folder / "manifest.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS + PROMPT_KEYS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.manifest)
        return hashlib.sha256((self.folder / "manifest.csv").read_bytes()).hexdigest()


def _finish_array(raw: Path, npy: Path, shape: tuple[int, ...]) -> None:
    """Turn an append-only raw byte file into a .npy of ``shape`` (uint8)."""
    out = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=shape)
    if shape[0]:
        out[:] = np.memmap(raw, dtype=np.uint8, mode="r", shape=shape)
    out.flush()
    del out
    raw.unlink()


def prepare_dataset(
    raw_dir: Path,
    out_dir: Path,
    size: int,
    split_fractions=(0.7, 0.15, 0.15),
    seed: int = 0,
    workers: int = 1,
    drop_duplicates: bool = False,
    empty_slice_fraction: float = 0.1,
    window: tuple[float, float] | None = None,
) -> dict:
    """Build the cache for one dataset at one image size; returns the meta dict.

    Splits are grouped and deterministic from ``seed``. Images whose decoded
    pixels hash equal in two different splits raise ``ValueError`` naming both
    (``drop_duplicates=True`` instead keeps the first, in train/val/test then
    csv order, and counts the rest in ``n_duplicates_dropped``). Volume rows
    keep every slice with the target label plus ``empty_slice_fraction`` of the
    others; intensities are scaled to uint8 by per-volume min–max or ``window``.
    ``workers`` > 1 decodes in a process pool. Nothing is left at ``out_dir``
    when anything fails.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    rows = read_samples(raw_dir)
    split_of = assign_splits(rows, split_fractions, seed)
    opts = {"seed": seed, "window": window, "empty_fraction": empty_slice_fraction}
    tasks = [
        (raw_dir, r, size, split == "test", opts)
        for split in SPLITS
        for r in rows
        if split_of[r["group"]] == split
    ]
    seen: dict[str, tuple[str, str]] = {}  # content hash -> (split, description of first sample)
    dropped = 0
    with atomic_dir(out_dir) as tmp:
        writer = _CacheWriter(tmp, size)
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap(_load_task, tasks, chunksize=8) if pool else map(_load_task, tasks)
            for smp in (smp for samples in results for smp in samples):
                split = split_of[smp["group"]]
                where = f"{smp['id']} ({raw_dir / smp['source_image']}, {split})"
                if smp["content_hash"] in seen:
                    first_split, first = seen[smp["content_hash"]]
                    if drop_duplicates:
                        dropped += 1
                        log.warning("dropping duplicate %s of %s", where, first)
                        continue
                    if first_split != split:
                        raise ValueError(f"split leak: identical image content in {first} and {where}")
                seen.setdefault(smp["content_hash"], (split, where))
                writer.add(smp, split)
        finally:
            if pool:
                pool.terminate()
            writer.close()
        meta = {
            "size": size,
            "seed": seed,
            "split_fractions": list(split_fractions),
            "split_sizes": writer.sizes,
            "manifest_sha256": writer.finish(),
            "n_duplicates_dropped": dropped,
            "n_raw_rows": len(rows),
            "prompt_keys": PROMPT_KEYS,
            "source": str(raw_dir),
            "empty_slice_fraction": empty_slice_fraction,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
