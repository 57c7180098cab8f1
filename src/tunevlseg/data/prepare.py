"""Raw layout -> grouped split -> resized uint8 cache + manifest.

Raw layout (every raw dataset folder, real or synthetic): ``samples.csv`` with
columns ``id,image,mask,phrase,group`` (paths relative to the folder, or
absolute: real datasets point into the extracted release). Optional columns:

- ``label``: the row is a NIfTI pair and this is the target label; 3-D volumes
  are sliced along the last axis, a 2-D frame gives one sample (``transpose`` =
  1 swaps its axes to (rows, columns), as CAMUS needs);
- ``mask_rule``: how ``mask`` becomes binary (see :mod:`tunevlseg.data.masks`);
- ``split``: official split (train/val/test; train/test only = validation carved
  from train); ``stratum``: stratify the seeded split (e.g. BUSI class);
- ``context``: a sentence added to prompt ``p4`` (e.g. CAMUS view and phase).

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
from tunevlseg.data.masks import binary_mask, load_mask, open_image
from tunevlseg.data.prompts import PROMPT_KEYS, build_prompts
from tunevlseg.data.volumes import load_pair, slice_volume, window_to_uint8

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("id", "image", "mask", "phrase", "group")
MANIFEST_COLUMNS = ["id", "split", "source_image", "source_mask", "content_hash", "orig_h", "orig_w", "group"]


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


def _seeded_cut(rows: list[dict], fractions, seed: int) -> dict[str, str]:
    """Shuffle the groups of ``rows`` and cut where cumulative row counts cross ``fractions``."""
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


def _stratified_cut(rows: list[dict], fractions, seed: int) -> dict[str, str]:
    """:func:`_seeded_cut` within each ``stratum`` (a group belongs to its first row's stratum)."""
    stratum_of: dict[str, str] = {}
    for r in rows:
        stratum_of.setdefault(r["group"], r.get("stratum") or "")
    out: dict[str, str] = {}
    for stratum in sorted(set(stratum_of.values())):
        out.update(_seeded_cut([r for r in rows if stratum_of[r["group"]] == stratum], fractions, seed))
    return out


def assign_splits(rows: list[dict], fractions=(0.7, 0.15, 0.15), seed: int = 0,
                  val_fraction: float | None = None) -> dict[str, str]:
    """Map each group to a split, deterministically from ``seed``; a group never spans splits.

    Groups are shuffled and cut where the cumulative row count crosses the
    fractions (by each group's midpoint), separately per ``stratum`` when that
    column is filled. A non-empty ``split`` column overrides this (official
    splits; consistent per group, every row filled). When the official split
    has no ``val``, a validation split is carved from the train groups
    (``val_fraction`` of them, default ``fractions[1] / (fractions[0] +
    fractions[1])``), so that validation and test never coincide.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    if not any(r.get("split") for r in rows):
        return _stratified_cut(rows, fractions, seed)
    out: dict[str, str] = {}
    for r in rows:
        s = r.get("split") or ""
        if s not in SPLITS or out.setdefault(r["group"], s) != s:
            raise ValueError(f"samples.csv row {r['id']}: bad or inconsistent split {s!r} for group {r['group']}")
    if "val" not in out.values():
        v = fractions[1] / (fractions[0] + fractions[1]) if val_fraction is None else float(val_fraction)
        if not 0 <= v < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {v}")
        train_rows = [r for r in rows if out[r["group"]] == "train"]
        carved = _stratified_cut(train_rows, (1 - v, v, 0.0), seed)
        if v > 0 and "val" not in carved.values() and len(carved) > 1:
            # too few groups for the fraction to reach one (e.g. few cities): take the smallest group
            sizes = Counter(r["group"] for r in train_rows)
            carved[min(sorted(carved), key=lambda g: sizes[g])] = "val"
        out.update(carved)
    return out


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; clear error naming the file."""
    return np.asarray(open_image(path, "image").convert("RGB"))


read_mask = binary_mask  # (H, W) {0,1} from a {0,255}/{0,1} mask file; kept for callers of the old name


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


def _sample(row, sid, image, mask, raw_hash, size, keep_original, resized=None) -> dict:
    return {
        "id": sid,
        "group": row["group"],
        "phrase": row["phrase"],
        "source_image": row["image"],
        "source_mask": row["mask"],
        "content_hash": raw_hash,
        "orig_h": mask.shape[0],
        "orig_w": mask.shape[1],
        "image": resize_image(image, size) if resized is None else resized,
        "mask": resize_mask(mask, size),
        "original": mask if keep_original else None,
        "prompts": build_prompts(row["phrase"], mask, row.get("context") or ""),
    }


def _load_row(raw_dir: Path, row: dict, size: int, keep_original: bool, opts: dict, memo: dict) -> list[dict]:
    """Decode one samples.csv row into cache-ready samples.

    ``memo`` holds what rows of the same task share (a decoded, hashed and
    resized image; a label image; a volume pair), so an image with one sample
    per class or structure is decoded once.
    """
    image_path, mask_path = raw_dir / row["image"], raw_dir / row["mask"]
    if (row.get("label") or "") == "" and not row["image"].endswith((".nii", ".nii.gz")):
        if ("image", image_path) not in memo:
            image = read_image(image_path)
            memo[("image", image_path)] = (image, content_hash(image), resize_image(image, size))
        image, digest, resized = memo[("image", image_path)]
        mask = load_mask(raw_dir, row["mask"], row.get("mask_rule") or "", image.shape[:2], memo)
        return [_sample(row, row["id"], image, mask, digest, size, keep_original, resized)]
    if ("volume", image_path, mask_path) not in memo:
        memo[("volume", image_path, mask_path)] = load_pair(image_path, mask_path)
    volume, labels = memo[("volume", image_path, mask_path)]
    if volume.ndim not in (2, 3):
        raise ValueError(f"volume {image_path} has shape {volume.shape}; expected 2-D or 3-D")
    label = int(row.get("label") or 1)
    if volume.ndim == 2 or volume.shape[-1] == 1:  # one 2-D frame (CAMUS): one sample, id kept
        frame, labels2d = volume.reshape(volume.shape[:2]), labels.reshape(volume.shape[:2])
        if (row.get("transpose") or "0") == "1":
            frame, labels2d = frame.T, labels2d.T
        gray = window_to_uint8(frame, opts["window"])
        rgb = np.repeat(gray[..., None], 3, axis=-1)
        mask = (labels2d == label).astype(np.uint8)
        return [_sample(row, row["id"], rgb, mask, content_hash(frame), size, keep_original)]
    seed = zlib.crc32(f"{opts['seed']}:{row['id']}".encode())
    scaled = window_to_uint8(volume, opts["window"])
    out = []
    for k, image2d, mask2d in slice_volume(scaled, labels.reshape(volume.shape), label, -1, opts["empty_fraction"], seed):
        rgb = np.repeat(image2d[..., None], 3, axis=-1)
        out.append(_sample(row, f"{row['id']}_s{k:02d}", rgb, mask2d, content_hash(volume[..., k]), size, keep_original))
    return out


def _load_task(task) -> list[dict]:
    """Decode a run of consecutive rows sharing one image (runs in pool workers)."""
    raw_dir, rows, size, keep_original, opts = task
    memo: dict = {}
    return [smp for row in rows for smp in _load_row(raw_dir, row, size, keep_original, opts, memo)]


def _tasks(raw_dir: Path, ordered: list[tuple[str, dict]], size: int, opts: dict) -> list[tuple]:
    """Group consecutive rows of the same split and image file into one task each (order kept)."""
    tasks: list[tuple] = []
    for split, row in ordered:
        last = tasks[-1] if tasks else None
        if last and last[5] == split and last[1][0]["image"] == row["image"]:
            last[1].append(row)
        else:
            tasks.append((raw_dir, [row], size, split == "test", opts, split))
    return [t[:5] for t in tasks]


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
        self.manifest.append({**{k: smp[k] for k in MANIFEST_COLUMNS if k != "split"}, "split": split, **smp["prompts"]})

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
    val_fraction: float | None = None,
) -> dict:
    """Build the cache for one dataset at one image size; returns the meta dict.

    Splits are grouped and deterministic from ``seed`` (see
    :func:`assign_splits`). Images whose decoded pixels hash equal in two
    different splits raise ``ValueError`` naming both (``drop_duplicates=True``
    instead keeps the first, in train/val/test then csv order, drops the later
    copies in other splits, and lists them in ``duplicates_dropped``). The same
    image several times within one split (one sample per structure or class)
    is legitimate and kept. Volume rows
    keep every slice with the target label plus ``empty_slice_fraction`` of the
    others; intensities are scaled to uint8 by per-volume min–max or ``window``.
    ``workers`` > 1 decodes in a process pool. Nothing is left at ``out_dir``
    when anything fails.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    rows = read_samples(raw_dir)
    split_of = assign_splits(rows, split_fractions, seed, val_fraction)
    opts = {"seed": seed, "window": window, "empty_fraction": empty_slice_fraction}
    ordered = [(split, r) for split in SPLITS for r in rows if split_of[r["group"]] == split]
    tasks = _tasks(raw_dir, ordered, size, opts)
    seen: dict[str, tuple[str, str]] = {}  # content hash -> (split, description of first sample)
    dropped: list[str] = []
    with atomic_dir(out_dir) as tmp:
        writer = _CacheWriter(tmp, size)
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap(_load_task, tasks, chunksize=4) if pool else map(_load_task, tasks)
            for smp in (smp for samples in results for smp in samples):
                split = split_of[smp["group"]]
                where = f"{smp['id']} ({raw_dir / smp['source_image']}, {split})"
                if smp["content_hash"] in seen and seen[smp["content_hash"]][0] != split:
                    first = seen[smp["content_hash"]][1]
                    if not drop_duplicates:
                        raise ValueError(f"split leak: identical image content in {first} and {where}")
                    dropped.append(f"{where} duplicates {first}")
                    log.warning("dropping duplicate %s of %s", where, first)
                    continue
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
            "n_duplicates_dropped": len(dropped),
            "duplicates_dropped": dropped,
            "n_raw_rows": len(rows),
            "prompt_keys": PROMPT_KEYS,
            "source": str(raw_dir),
            "empty_slice_fraction": empty_slice_fraction,
            "val_fraction": val_fraction,
        }
        if (raw_dir / "index.json").is_file():  # real dataset: where the release came from
            meta["index"] = json.loads((raw_dir / "index.json").read_text())
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
