"""Raw layout -> content-hash pre-pass -> grouped split -> resized uint8 cache + manifest.

Raw layout (every raw dataset folder, real or synthetic): ``samples.csv`` with
columns ``id,image,mask,phrase,group`` (paths relative to the folder, or
absolute: real datasets point into the extracted release). Optional columns:

- ``label``: the row is a NIfTI pair and this is the target label; 3-D volumes
  are sliced along the last axis, a 2-D frame gives one sample (``transpose`` =
  1 swaps its axes to (rows, columns), as CAMUS needs);
- ``mask_rule``: how ``mask`` becomes binary (see :mod:`tunevlseg.data.masks`);
- ``split``: official split (train/val/test; train/test only = validation carved
  from train); ``stratum``: stratify the seeded split (e.g. BUSI class);
- ``context``: a sentence added to prompt ``p4`` (e.g. CAMUS view and phase);
- ``orient`` = ``canonical``: the NIfTI pair is reoriented to the closest canonical (RAS+)
  orientation; ``axis``: slice along this axis instead of the last; ``case`` and
  ``spacing``: the volume's id and voxel spacing, copied into the manifest (every slice
  names its case: the test Dice is then also reported per volume).

Two passes over the images, both parallel over the workers: the pre-pass
decodes each image once and hashes its pixels (so duplicates can join one group
before any split is drawn); the main pass decodes again, resizes and writes.

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
from tunevlseg.data.masks import binary_mask, load_mask
from tunevlseg.data.pixels import check_size, read_image, window_to_uint8
from tunevlseg.data.prompts import PROMPT_KEYS, build_prompts
from tunevlseg.data.spec import SPLITS
from tunevlseg.data.volumes import load_pair, slice_volume

log = logging.getLogger(__name__)

LEAK_POLICIES = ("group", "fail", "drop")
REQUIRED_COLUMNS = ("id", "image", "mask", "phrase", "group")
MANIFEST_COLUMNS = ["id", "split", "source_image", "source_mask", "content_hash", "orig_h", "orig_w", "group"]
#: Manifest columns of datasets whose rows name a volume case (nnU-Net, datalist volumes): per-volume scores.
VOLUME_COLUMNS = ["case", "spacing"]


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


# ---------------------------------------------------------------- decoding rows (shared by both passes)


def _is_volume(row: dict) -> bool:
    return (row.get("label") or "") != "" or row["image"].endswith((".nii", ".nii.gz"))


def _volume(raw_dir: Path, row: dict, memo: dict, warn: bool = True):
    """The row's (volume, labels) NIfTI pair, decoded once per task (``warn``: about NaN/inf intensities)."""
    key = ("volume", raw_dir / row["image"], raw_dir / row["mask"], row.get("axis") or "")
    if key not in memo:
        volume, labels = load_pair(key[1], key[2], warn=warn, canonical=row.get("orient") == "canonical")
        if key[3] != "" and volume.ndim == 3:  # slice along `axis` (the last axis once moved there)
            volume, labels = np.moveaxis(volume, int(key[3]), -1), np.moveaxis(labels, int(key[3]), -1)
        memo[key] = volume, labels
    volume, labels = memo[key]
    if volume.ndim not in (2, 3):
        raise ValueError(f"volume {key[1]} has shape {volume.shape}; expected 2-D or 3-D")
    check_size(volume.shape, key[1], "volume")
    return volume, labels


def _frame(volume: np.ndarray, labels: np.ndarray, row: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """A 2-D frame (CAMUS) upright as (rows, columns), or None for a 3-D volume."""
    if not (volume.ndim == 2 or volume.shape[-1] == 1):
        return None
    frame, labels2d = volume.reshape(volume.shape[:2]), labels.reshape(volume.shape[:2])
    if (row.get("transpose") or "0") == "1":
        frame, labels2d = frame.T, labels2d.T
    return frame, labels2d


def _slices(volume: np.ndarray, labels: np.ndarray, row: dict, opts: dict):
    """The kept slices of a 3-D volume row: ``slice_volume`` with the row's label and per-row seed."""
    seed = zlib.crc32(f"{opts['seed']}:{row['id']}".encode())
    return slice_volume(volume, labels.reshape(volume.shape), int(row.get("label") or 1), -1,
                        opts["empty_fraction"], seed)


def _row_hashes(raw_dir: Path, row: dict, opts: dict, memo: dict) -> list[tuple[str, str]]:
    """``[(sample id, content hash), ...]`` of one row, exactly as :func:`_load_row` will produce them."""
    if not _is_volume(row):
        key = ("hash", raw_dir / row["image"])
        if key not in memo:
            memo[key] = content_hash(read_image(key[1], warn=False))  # the main pass warns
        return [(row["id"], memo[key])]
    volume, labels = _volume(raw_dir, row, memo, warn=False)
    frame = _frame(volume, labels, row)
    if frame is not None:
        return [(row["id"], content_hash(frame[0]))]
    return [(f"{row['id']}_s{k:02d}", _slice_hash(volume[..., k], row, k)) for k, _, _ in _slices(volume, labels, row, opts)]


def _slice_hash(pixels: np.ndarray, row: dict, k: int) -> str:
    """A slice's content hash; a constant slice (padding, air) is its own content: identical blank slices of
    two volumes are no leak, and must not merge their cases into one group."""
    return content_hash(pixels) if pixels.min() != pixels.max() else f"blank:{row['image']}:{k}"


def _hash_task(task) -> list[list[tuple[str, str]]]:
    """Pre-pass over a run of rows sharing one image (runs in pool workers): their samples' content hashes."""
    raw_dir, rows, opts = task
    memo: dict = {}
    return [_row_hashes(raw_dir, row, opts, memo) for row in rows]


def _mask_digest(mask: np.ndarray) -> str:
    return hashlib.blake2b(f"{mask.shape}".encode() + np.ascontiguousarray(mask).tobytes(), digest_size=16).hexdigest()


def _sample(row, sid, image, mask, raw_hash, size, keep, resized=None) -> dict:
    kept = keep is True or sid in keep
    return {
        "id": sid,
        "row": row["id"],
        "group": row["group"],
        "phrase": row["phrase"],
        "source_image": row["image"],
        "source_mask": row["mask"],
        "content_hash": raw_hash,
        "mask_digest": _mask_digest(mask) if kept else None,
        "orig_h": mask.shape[0],
        "orig_w": mask.shape[1],
        "image": resize_image(image, size) if resized is None else resized,
        "mask": resize_mask(mask, size),
        "original": mask if kept else None,
        "prompts": row.get("prompts") or build_prompts(row["phrase"], mask, row.get("context") or ""),
        **{k: row.get(k) or "" for k in VOLUME_COLUMNS},
    }


def _load_row(raw_dir: Path, row: dict, size: int, keep, opts: dict, memo: dict, known: dict) -> list[dict]:
    """Decode one samples.csv row into cache-ready samples.

    ``memo`` holds what rows of the same task share (a decoded and resized
    image; a label image; a volume pair), so an image with one sample per
    class or structure is decoded once. ``keep`` (True or a set of sample ids)
    says whose original-size mask to return; ``known`` holds the content
    hashes the pre-pass computed (sample id -> hash): pixels are hashed once.
    """
    if not _is_volume(row):
        image_path = raw_dir / row["image"]
        if ("image", image_path) not in memo:
            image = read_image(image_path)
            memo[("image", image_path)] = (image, resize_image(image, size))
        image, resized = memo[("image", image_path)]
        digest = known[row["id"]]
        mask = load_mask(raw_dir, row["mask"], row.get("mask_rule") or "", image.shape[:2], memo)
        return [_sample(row, row["id"], image, mask, digest, size, keep, resized)]
    volume, labels = _volume(raw_dir, row, memo)
    label = int(row.get("label") or 1)
    frame = _frame(volume, labels, row)
    if frame is not None:  # one 2-D frame (CAMUS): one sample, id kept
        gray = window_to_uint8(frame[0], opts["window"])
        rgb = np.repeat(gray[..., None], 3, axis=-1)
        mask = (frame[1] == label).astype(np.uint8)
        digest = known[row["id"]]
        return [_sample(row, row["id"], rgb, mask, digest, size, keep)]
    scaled = window_to_uint8(volume, opts["window"])
    out = []
    for k, _, mask2d in _slices(volume, labels, row, opts):
        sid = f"{row['id']}_s{k:02d}"
        rgb = np.repeat(scaled[..., k][..., None], 3, axis=-1)
        out.append(_sample(row, sid, rgb, mask2d, known[sid], size, keep))
    return out


def _load_task(task) -> list[dict]:
    """Decode a run of consecutive rows sharing one image (runs in pool workers)."""
    raw_dir, rows, size, keep, opts, known = task
    memo: dict = {}
    return [smp for row in rows for smp in _load_row(raw_dir, row, size, keep, opts, memo, known)]


def _runs(ordered: list[tuple[str, dict]]) -> list[tuple[str, list[dict]]]:
    """Consecutive rows of the same split and image file, as ``(split, rows)`` runs (order kept)."""
    runs: list[tuple[str, list[dict]]] = []
    for split, row in ordered:
        if runs and runs[-1][0] == split and runs[-1][1][0]["image"] == row["image"]:
            runs[-1][1].append(row)
        else:
            runs.append((split, [row]))
    return runs


# ---------------------------------------------------------------- duplicates: grouping and the leak audit


class _UnionFind:
    """Groups merged by shared content; a merged group is named after its smallest member."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, g: str) -> str:
        self.parent.setdefault(g, g)
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def duplicate_sets(rows: list[dict], hashes: list[list[tuple[str, str]]]) -> dict[str, list[tuple[int, str]]]:
    """Content hash -> ``[(row index, sample id), ...]`` for content found in more than one source.

    A source is an image file (or a volume slice); samples sharing one file
    (one per class or structure) are one source, not duplicates.
    """
    by_hash: dict[str, list[tuple[int, str]]] = {}
    for i, samples in enumerate(hashes):
        for sid, h in samples:
            by_hash.setdefault(h, []).append((i, sid))
    out = {}
    for h, members in by_hash.items():
        sources = {(rows[i]["image"], sid[len(rows[i]["id"]):]) for i, sid in members}
        if len(sources) > 1:
            out[h] = members
    return out


def group_duplicates(rows: list[dict], dups: dict[str, list[tuple[int, str]]]) -> tuple[list[dict], dict, set[str]]:
    """Put rows whose images have identical content into one group; returns ``(rows, merged, dropped ids)``.

    ``merged`` maps each merged group (named after its smallest member) to its
    member groups. Where an official ``split`` column separates copies, the
    split cannot move: the copy in the most held-out split (test > val >
    train) stays and the others are returned as dropped sample ids.
    """
    uf = _UnionFind()
    dropped: set[str] = set()
    for members in dups.values():
        by_split: dict[str, list[tuple[int, str]]] = {}
        for i, sid in members:
            by_split.setdefault(rows[i].get("split") or "", []).append((i, sid))
        keep = max(by_split, key=lambda s: SPLITS.index(s) if s in SPLITS else -1)
        for split, part in by_split.items():
            if split != keep:
                dropped.update(sid for _, sid in part)
        first = rows[by_split[keep][0][0]]["group"]
        for i, _ in by_split[keep]:
            uf.union(first, rows[i]["group"])
    out = [{**r, "group": uf.find(r["group"])} for r in rows]
    members: dict[str, set[str]] = {}
    for r, new in zip(rows, out):
        members.setdefault(new["group"], set()).add(r["group"])
    return out, {g: sorted(m) for g, m in sorted(members.items()) if len(m) > 1}, dropped


def _audit(rows: list[dict], hashes, split_of_row: dict[str, str], dups, policy: str, raw_dir: Path,
           skip: set[str]) -> tuple[set[str], list[str], list[str]]:
    """Cross-split identical content after the split: ``(ids to drop, drop notes, leak notes)``.

    In train/val/test then csv order, the first copy of a content stays;
    a later copy in another split fails (``fail``), is dropped (``drop``) or is
    reported and kept (``report``: published splits, which cannot move).
    """
    order = sorted(range(len(rows)), key=lambda i: (SPLITS.index(split_of_row[rows[i]["id"]]), i))
    dup_hashes = set(dups)
    seen: dict[str, tuple[str, str]] = {}
    drop, drop_notes, leaks = set(), [], []
    for i in order:
        split = split_of_row[rows[i]["id"]]
        for sid, h in hashes[i]:
            if h not in dup_hashes or sid in skip:
                continue
            where = f"{sid} ({raw_dir / rows[i]['image']}, {split})"
            if h in seen and seen[h][0] != split:
                first = seen[h][1]
                if policy in ("fail", "group"):  # group: only an official split can separate copies (dropped)
                    raise ValueError(f"split leak: identical image content in {first} and {where} "
                                     f"(leak_policy: group puts such copies in one split)")
                if policy == "drop":
                    drop.add(sid)
                    drop_notes.append(f"{where} duplicates {first}")
                    log.warning("dropping duplicate %s of %s", where, first)
                    continue
                leaks.append(f"{where} duplicates {first}")
                log.warning("published split leak: %s duplicates %s", where, first)
            seen.setdefault(h, (split, where))
    return drop, drop_notes, leaks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else round(int(np.logical_and(a, b).sum()) / union, 4)


def require_splits(name: str, sizes: dict[str, int], what: str = "samples") -> None:
    """``ValueError`` naming the dataset and its split sizes when a split the benchmark needs is empty."""
    empty = [s for s in SPLITS if not sizes.get(s)]
    if empty:
        shown = "/".join(str(sizes.get(s, 0)) for s in SPLITS)
        raise ValueError(f"dataset {name}: split sizes train/val/test = {shown} {what}: {', '.join(empty)} "
                         f"{'is' if len(empty) == 1 else 'are'} empty, and the benchmark needs all three "
                         f"(too few groups for the split fractions? set split_fractions / val_fraction, or use "
                         f"a larger dataset)")


# ---------------------------------------------------------------- the cache


class _CacheWriter:
    """Streams samples into per-split append-only files inside the cache folder."""

    def __init__(self, folder: Path, size: int, prompt_keys: list[str], extra: list[str] | None = None):
        self.folder, self.size, self.prompt_keys, self.extra = folder, size, prompt_keys, extra or []
        self.files = {s: (open(folder / f"{s}_images.raw", "wb"), open(folder / f"{s}_masks.raw", "wb")) for s in SPLITS}
        self.originals = zipfile.ZipFile(folder / "test_masks_original.npz", "w", zipfile.ZIP_DEFLATED)
        self.sizes = dict.fromkeys(SPLITS, 0)
        self.manifest: list[dict] = []

    def add(self, smp: dict, split: str) -> None:
        self.files[split][0].write(smp["image"].tobytes())
        self.files[split][1].write(smp["mask"].tobytes())
        if split == "test":
            with self.originals.open(f"{smp['id']}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, smp["original"])
        self.sizes[split] += 1
        self.manifest.append({**{k: smp[k] for k in MANIFEST_COLUMNS + self.extra if k != "split"}, "split": split,
                              **{k: smp["prompts"][k] for k in self.prompt_keys}})

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
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS + self.extra + self.prompt_keys, lineterminator="\n")
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


def _plan(rows, hashes, leak_policy, published, raw_dir, split_fractions, seed, val_fraction) -> dict:
    """Everything decided before the main pass: groups (merged), the split of every row, what is dropped.

    Returns ``rows`` (groups merged), ``split_of_row``, ``dropped`` sample ids
    with ``drop_notes``, ``leaks`` (published splits), ``merged``, ``dups``,
    ``counts`` (samples per split) and ``policy`` as applied by the audit.
    """
    dups = duplicate_sets(rows, hashes)
    merged, dropped, drop_notes = {}, set(), []
    if leak_policy == "group" and not published:
        rows, merged, dropped = group_duplicates(rows, dups)
        for i, samples in enumerate(hashes):
            drop_notes += [f"{sid} ({raw_dir / rows[i]['image']}, official {rows[i].get('split')}) duplicates "
                           f"an image of a more held-out official split" for sid, _ in samples if sid in dropped]
        for g, members in merged.items():
            log.info("identical images: groups %s form one group %s", members, g)
    if published:
        split_of_row = {r["id"]: r["split"] for r in rows}
    else:
        group_split = assign_splits(rows, split_fractions, seed, val_fraction)
        split_of_row = {r["id"]: group_split[r["group"]] for r in rows}
    policy = "report" if published and leak_policy == "group" else leak_policy
    more, more_notes, leaks = _audit(rows, hashes, split_of_row, dups, policy, raw_dir, dropped)
    counts = Counter(split_of_row[r["id"]] for r, samples in zip(rows, hashes)
                     for sid, _ in samples if sid not in dropped | more)
    return {"rows": rows, "split_of_row": split_of_row, "dropped": dropped | more, "drop_notes": drop_notes + more_notes,
            "leaks": leaks, "merged": merged, "dups": dups, "counts": counts, "policy": policy}


def _write_cache(tmp: Path, rows, hashes, plan: dict, size: int, opts: dict, prompt_keys, pool, raw_dir: Path):
    """The main pass: decode, resize and stream every kept sample into the cache at ``tmp``.

    Returns ``(split sizes, manifest sha256, conflicting masks)``. Copies with
    different masks for one phrase are found here (their original masks are
    kept for the IoU); a cross-split copy the plan missed stops everything.
    """
    split_of_row, dropped = plan["split_of_row"], plan["dropped"]
    dup_ids = {sid for members in plan["dups"].values() for _, sid in members}
    samples_of = {r["id"]: samples for r, samples in zip(rows, hashes)}  # row id -> [(sample id, hash), ...]
    ordered = [(split, r) for split in SPLITS for r in rows if split_of_row[r["id"]] == split]
    tasks = [(raw_dir, run, size, True if split == "test" else
              frozenset(sid for r in run for sid, _ in samples_of[r["id"]] if sid in dup_ids), opts,
              {sid: h for r in run for sid, h in samples_of[r["id"]]})
             for split, run in _runs(ordered)]
    firsts: dict[tuple[str, str], tuple[str, str, np.ndarray]] = {}
    conflicts: list[dict] = []
    seen: dict[str, tuple[str, str]] = {}
    writer = _CacheWriter(tmp, size, prompt_keys, VOLUME_COLUMNS if any(r.get("case") for r in rows) else None)
    try:
        results = pool.imap(_load_task, tasks, chunksize=4) if pool else map(_load_task, tasks)
        for smp in (smp for samples in results for smp in samples):
            if smp["id"] in dropped:
                continue
            split, h = split_of_row[smp["row"]], smp["content_hash"]
            where = f"{smp['id']} ({raw_dir / smp['source_image']}, {split})"
            if h in seen and seen[h][0] != split and plan["policy"] != "report":
                raise ValueError(f"split leak: identical image content in {seen[h][1]} and {where}")
            seen.setdefault(h, (split, where))
            if smp["id"] in dup_ids:
                key = (h, smp["phrase"])
                if key not in firsts:
                    firsts[key] = (smp["id"], smp["mask_digest"], smp["original"])
                elif firsts[key][1] != smp["mask_digest"]:
                    conflicts.append({"samples": [firsts[key][0], smp["id"]], "phrase": smp["phrase"],
                                      "iou": _iou(firsts[key][2], smp["original"])})
                    log.warning("identical images with different masks: %s and %s (%s, IoU %.2f)",
                                firsts[key][0], smp["id"], smp["phrase"], conflicts[-1]["iou"])
            writer.add(smp, split)
    finally:
        writer.close()
    return writer.sizes, writer.finish(), conflicts


def prepare_dataset(
    raw_dir: Path,
    out_dir: Path,
    size: int,
    split_fractions=(0.7, 0.15, 0.15),
    seed: int = 0,
    workers: int = 1,
    leak_policy: str = "group",
    empty_slice_fraction: float = 0.1,
    window: tuple[float, float] | None = None,
    val_fraction: float | None = None,
    annotations: str | Path | None = None,
) -> dict:
    """Build the cache for one dataset at one image size; returns the meta dict.

    A pre-pass (parallel, decoded pixels only) hashes every sample's image.
    Then, by ``leak_policy``:

    - ``group`` (default): samples whose decoded pixels are identical join one
      group (union with the reader's patient/sequence groups) *before* the
      split, so copies always share a split and nothing is lost. Where an
      official split separates copies, the copy in the most held-out split
      stays and the others are dropped (``duplicates_dropped``).
    - ``fail``: the seeded split is made as given; identical content in two
      splits raises ``ValueError`` naming both (before any resizing).
    - ``drop``: the first copy (train/val/test then csv order) stays, later
      copies in other splits are dropped and listed.

    Splits are grouped and deterministic from ``seed`` (:func:`assign_splits`).
    ``annotations`` (a folder with medvlsm ``anns/{train,val,test}.json``)
    replaces the split and the prompts by the published ones
    (:mod:`tunevlseg.data.published`); the audit then reports cross-split
    copies (``leaks``) instead of regrouping (``fail``/``drop`` still apply).
    Copies with different masks for the same phrase are listed in
    ``conflicting_masks`` (and logged). The same image several times within one
    group (one sample per structure or class) is legitimate. A split left
    empty is an error naming the dataset and the sizes. Volume rows keep every
    slice with the target label plus ``empty_slice_fraction`` of the others;
    intensities are scaled to uint8 by per-volume min–max or ``window``.
    ``workers`` > 1 decodes in a process pool. Nothing is left at ``out_dir``
    when anything fails.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    if leak_policy not in LEAK_POLICIES:
        raise ValueError(f"leak_policy must be one of {LEAK_POLICIES}, got {leak_policy!r}")
    rows = read_samples(raw_dir)
    n_raw_rows, name = len(rows), raw_dir.name
    index = json.loads((raw_dir / "index.json").read_text()) if (raw_dir / "index.json").is_file() else None
    if index is not None and index.get("source") not in (None, name):
        name = f"{name} ({index['source']})"  # e.g. results/index/<config name>: say which release it is
    published = None
    if annotations:
        from tunevlseg.data.published import apply_published

        matcher = None
        if index is not None:
            from tunevlseg.data.registry import REGISTRY

            spec = REGISTRY.get(index.get("source"))  # none for the user's own data (folder, datalist, nnunet)
            matcher = spec.published_id if spec else None
        rows, published = apply_published(rows, annotations, matcher)
        if not rows:
            raise ValueError(f"dataset {name}: the annotation files in {annotations} list none of its "
                             f"{n_raw_rows} samples")
    opts = {"seed": seed, "window": window, "empty_fraction": empty_slice_fraction}
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        pre = [(raw_dir, run, opts) for _, run in _runs([("", r) for r in rows])]
        results = pool.imap(_hash_task, pre, chunksize=8) if pool else map(_hash_task, pre)
        hashes = [h for per_run in results for h in per_run]  # per row: [(sample id, content hash), ...]
        plan = _plan(rows, hashes, leak_policy, published is not None, raw_dir, split_fractions, seed, val_fraction)
        require_splits(name, plan["counts"])
        rows = plan["rows"]
        with atomic_dir(out_dir) as tmp:
            prompt_keys = published["prompt_keys"] if published else PROMPT_KEYS
            sizes, digest, conflicts = _write_cache(tmp, rows, hashes, plan, size, opts, prompt_keys, pool, raw_dir)
            require_splits(name, sizes)
            meta = {
                "size": size,
                "seed": seed,
                "split_fractions": list(split_fractions),
                "split_sizes": sizes,
                "manifest_sha256": digest,
                "leak_policy": leak_policy,
                "duplicates": {"n_sets": len(plan["dups"]), "n_samples": sum(len(m) for m in plan["dups"].values()),
                               "sets": [sorted(sid for _, sid in m) for m in plan["dups"].values()]},
                "groups_merged": plan["merged"],
                "conflicting_masks": conflicts,
                "n_duplicates_dropped": len(plan["drop_notes"]),
                "duplicates_dropped": plan["drop_notes"],
                "n_raw_rows": n_raw_rows,
                "prompt_keys": prompt_keys,
                "source": str(raw_dir),
                "empty_slice_fraction": empty_slice_fraction,
                "val_fraction": val_fraction,
            }
            if published is not None:
                meta["published"] = {**published, "leaks": plan["leaks"]}
            if index is not None:  # real dataset: where the release came from
                meta["index"] = index
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        if pool:
            pool.terminate()
    return meta
