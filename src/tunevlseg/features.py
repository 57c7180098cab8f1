"""The frozen-feature cache: a model's unprompted image features, computed once per (model, weights, dataset, size).

Methods whose image side is frozen and unprompted (``METHODS[m].frozen_image_side`` and tuned:
CoOp, CoCoOp) see the same image features in every epoch, trial and seed. The ``features`` rule
computes them once (``adapter.encode_image(adapter.normalize(images), None, pooled=True)``) into
``.npy`` arrays, shared by every trial and seed of every cell that reads them; training then
runs only ``adapter.forward_frozen`` (text encoder + decoder) on them.

Folder ``<results>/features/<model>/<dataset>/<size>/`` (:meth:`tunevlseg.cells.Layout.features`):

=========================  ========================================================================
``meta.json``              what produced it: model, weights, options, manifest hash, dtype, views, shapes
``<split>_rows.npy``       int64 (n_samples,): sample → image row (an image listed once per class is
                           encoded once)
``<split>_map<i>.npy``     (V, n_images, …) the i-th decoder input (CLIPSeg: extract-layer activations;
                           CRIS: C3, C4, C5); V = 1 + ``views`` for train, 1 for val/test
``<split>_pooled.npy``     (V, n_images, image_feature_dim): the pooled feature (CoCoOp)
``train_views.npz``        the augmentation parameters of each view (view 0 = the image itself)
=========================  ========================================================================

Augmentation (``training.cache_views``): with 0 views (the default) the cache holds the plain
images only and a training sample that the trial's augmentation changes (36 % at p = 0.2) is
encoded live — the trained distribution is exactly the uncached one. With K > 0 views the cache
also holds K augmented views per training image (drawn from the same augmentation distribution
given that it changes something, seeded independently of the trials); a changed sample then reads
one of them (picked per trial, epoch and sample), and nothing is encoded live. See
docs/explanation/speed.md.

Integrity (format 2). ``meta.json`` records the weights' content identity (``study.weights_identity``,
the one the cell fingerprint uses: sha256 of local weight files, or hub name and revision) and every
file's size and sha256. A cell refuses a cache of other weights content, and one whose files are cut
short or changed (sizes checked at every open, checksums once per job): it moves such a cache aside
(``<folder>.damaged-<time>``) so that the next workflow run rebuilds it. Arrays are read with
``pread``, not memory-mapped: a file truncated while in use is an error naming it, not a SIGBUS. The
writer checks the free space first, preallocates every array (a full disk is an error naming the
folder, never a SIGBUS), writes into ``<folder>.tmp-*`` and renames it; the folders killed runs leave
are removed by the next build.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.atomic import atomic_dir, leftovers
from .data.cache import SPLITS, PreparedSplit, manifest_hash
from .models.base import ImageFeatures
from .study import weights_identity
from .train.augment import PARAM_KEYS, Augment, identity_params

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
DTYPES = ("float16", "float32")
#: Room for meta.json and train_views.npz on top of the arrays when checking the free space.
SPACE_MARGIN = 1 << 20


def image_rows(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, first): ``rows[i]`` = image row of sample i (identical cached pixels share a row); ``first[r]``
    = the first sample showing image row r."""
    seen: dict[bytes, int] = {}
    rows = np.empty(len(images), dtype=np.int64)
    first = []
    for i in range(len(images)):
        key = hashlib.blake2b(np.ascontiguousarray(images[i]).tobytes(), digest_size=16).digest()
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        rows[i] = seen[key]
    return rows, np.asarray(first, dtype=np.int64)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------- building
@dataclass
class _SplitPlan:
    name: str
    split: PreparedSplit
    rows: np.ndarray  # sample → image row
    first: np.ndarray  # image row → first sample showing it
    params: list  # [view][image row] augmentation parameters (view 0: identity)


class _NpyOut:
    """A preallocated ``.npy`` written with ``pwrite``: a full disk is ENOSPC (an OSError), never a SIGBUS."""

    def __init__(self, path: Path, shape: tuple, dtype: str):
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self.row_bytes = math.prod(shape[2:]) * self.dtype.itemsize
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": tuple(shape)}
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by close()
        np.lib.format.write_array_header_1_0(self.fh, header)
        self.fh.flush()
        self.offset = self.fh.tell()
        try:
            preallocate(self.fh.fileno(), self.offset + math.prod(shape) * self.dtype.itemsize)
        except OSError as err:
            self.fh.close()
            raise OSError(err.errno, err.strerror, str(path)) from None

    def write(self, view: int, start: int, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1).view(np.uint8)
        position = self.offset + (view * self.shape[1] + start) * self.row_bytes
        while data.size:
            try:
                written = os.pwrite(self.fh.fileno(), data, position)
            except OSError as err:
                raise OSError(err.errno, err.strerror, str(self.path)) from None
            data, position = data[written:], position + written

    def close(self) -> None:
        self.fh.close()


def preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes for ``fd`` (``os.posix_fallocate``); ENOSPC propagates. On a file system that
    cannot preallocate, only sets the size: the ``pwrite`` calls then report a full disk."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, size)


def check_space(folder: Path, needed: int) -> None:
    """Fail, naming the folder and both numbers, unless its file system has ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise RuntimeError(f"features: not enough free space for the feature cache in {folder}: needs {needed:,} "
                           f"bytes, {free:,} free")


def _clear_leftovers(out_dir: Path) -> None:
    """Remove what killed builds left (``<out>.tmp-*``, ``<out>.old-*``) and caches moved aside as damaged."""
    damaged = [p for p in out_dir.parent.iterdir() if p.name.startswith(f"{out_dir.name}.damaged-") and p.is_dir()]
    for folder in leftovers(out_dir) + sorted(damaged):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        log.warning("features: removing %s (%d bytes) left by an earlier run", folder, size)
        shutil.rmtree(folder, ignore_errors=True)


def _plan(prepared_dir: Path, split_name: str, views: int, augment: Augment) -> _SplitPlan:
    split = PreparedSplit(prepared_dir, split_name)
    rows, first = image_rows(split.images)
    n_views = 1 + views if split_name == "train" else 1
    params = [[identity_params() for _ in first]]
    params += [[augment.draw_view(v, r) for r in range(len(first))] for v in range(1, n_views)]
    return _SplitPlan(split_name, split, rows, first, params)


def _encode(adapter, plan: _SplitPlan, view: int, start: int, stop: int, device, amp: bool) -> ImageFeatures:
    """The features of image rows ``start:stop`` of ``plan`` in ``view``."""
    from .train.loop import autocast_for

    chunk = plan.first[start:stop]
    images = torch.from_numpy(np.stack([plan.split.images[i] for i in chunk])).to(device)
    images = images.permute(0, 3, 1, 2).contiguous().float().div_(255)
    if view:
        batch_params = {k: torch.as_tensor(np.stack([plan.params[view][r][k] for r in range(start, stop)]))
                        for k in PARAM_KEYS}
        images, _ = Augment.apply(images, torch.zeros_like(images[:, :1]), batch_params)
    with autocast_for(device, amp):
        return adapter.encode_image(adapter.normalize(images), None, pooled=True)


def _array_names(split: str, n_maps: int) -> list[str]:
    return [f"{split}_map{i}.npy" for i in range(n_maps)] + [f"{split}_pooled.npy"]


def _write_split(adapter, plan: _SplitPlan, tmp: Path, shapes: list, dtype: str, batch_size: int, device,
                 amp: bool, prepared_dir: Path) -> None:
    """Encode every view of every image of one split into its preallocated arrays (``shapes``: per image)."""
    np.save(tmp / f"{plan.name}_rows.npy", plan.rows)
    n_views, n_images = len(plan.params), len(plan.first)
    if plan.name == "train":
        np.savez(tmp / "train_views.npz", **{k: np.stack([np.stack([p[k] for p in view]) for view in plan.params])
                                            for k in PARAM_KEYS})
    arrays = [_NpyOut(tmp / name, (n_views, n_images, *shape), dtype)
              for name, shape in zip(_array_names(plan.name, len(shapes) - 1), shapes, strict=True)]
    try:
        for view in range(n_views):
            for start in range(0, n_images, batch_size):
                stop = min(start + batch_size, n_images)
                feats = _encode(adapter, plan, view, start, stop, device, amp)
                for array, tensor in zip(arrays, feats.tensors(), strict=True):
                    values = tensor.float().cpu().numpy().astype(dtype)
                    if not np.isfinite(values).all():
                        raise ValueError(f"features for {prepared_dir} ({plan.name}) overflow {dtype}; "
                                         "set training.cache_dtype: float32")
                    array.write(view, start, values)
    finally:
        for array in arrays:
            array.close()
    log.info("features %s: %d samples, %d images, %d view(s)", plan.name, len(plan.rows), n_images, n_views)


def _needed_bytes(plans: list[_SplitPlan], shapes: list, dtype: str) -> int:
    per_image = sum(math.prod(s) for s in shapes) * np.dtype(dtype).itemsize
    return sum(len(p.params) * len(p.first) * per_image + 8 * len(p.rows) for p in plans) + SPACE_MARGIN


@torch.no_grad()
def build_features(adapter, prepared_dir: Path, out_dir: Path, *, model: str, weights: str,
                   model_options: dict | None = None, dtype: str = "float16", views: int = 0, seed: int = 0,
                   batch_size: int = 32, device: torch.device | str = "cpu", amp: bool = True) -> dict:
    """Encode every image of the prepared splits with the frozen ``adapter``; write the cache atomically.

    Returns the meta record (also ``meta.json``). Fails, leaving nothing behind, when a feature does not
    fit ``dtype`` (an overflow to inf in float16: use float32) or the disk is too full (an error naming
    the folder, the bytes needed and free).
    """
    if dtype not in DTYPES:
        raise ValueError(f"features: dtype must be one of {DTYPES}, got {dtype!r}")
    if views < 0:
        raise ValueError(f"features: views must be >= 0, got {views}")
    device = torch.device(device)
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    adapter.to(device).eval()
    started = time.perf_counter()
    meta = dict(version=FORMAT_VERSION, model=model, weights=weights, weights_identity=weights_identity(weights),
                model_options=model_options or {}, prepared_dir=str(prepared_dir),
                manifest_sha256=manifest_hash(prepared_dir), dtype=dtype, views=int(views), seed=int(seed),
                device=str(device), amp=bool(amp), splits={})
    augment = Augment(seed)
    plans = [_plan(prepared_dir, name, views, augment) for name in SPLITS]
    probe = _encode(adapter, plans[0], 0, 0, 1, device, amp)  # the per-image shapes, before writing anything
    shapes = [list(t.shape[1:]) for t in probe.tensors()]
    meta.update(input_size=list(probe.input_size) if probe.input_size else None, maps=shapes[:-1],
                pooled_dim=int(shapes[-1][-1]))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(out_dir)
    needed = _needed_bytes(plans, shapes, dtype)
    check_space(out_dir.parent, needed)
    try:
        with atomic_dir(out_dir) as tmp:
            for plan in plans:
                _write_split(adapter, plan, tmp, shapes, dtype, batch_size, device, amp, prepared_dir)
                meta["splits"][plan.name] = dict(samples=len(plan.rows), images=len(plan.first))
            meta["files"] = {p.name: dict(bytes=p.stat().st_size, sha256=sha256_of(p)) for p in sorted(tmp.iterdir())}
            meta["bytes"] = sum(f["bytes"] for f in meta["files"].values())
            meta["seconds"] = round(time.perf_counter() - started, 2)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(out_dir.parent).free
        raise RuntimeError(f"features: the disk of {out_dir.parent} is full (writing {Path(err.filename or 'the cache').name}): "
                           f"the cache needs {needed:,} bytes, {free:,} free; nothing was kept") from None
    return meta


# ----------------------------------------------------------------------------------------- reading
class DamagedCacheError(ValueError):
    """A cache cut short, changed or computed for other weights content; it was moved aside (:func:`quarantine`)."""


class _Damaged(Exception):
    """What is wrong with one file of a cache (turned into a :class:`DamagedCacheError` naming the folder)."""


def quarantine(folder: Path, problem: str) -> DamagedCacheError:
    """Move a damaged or stale cache aside to ``<folder>.damaged-<time>-<pid>`` (removed by the next build), so
    that the workflow sees its output missing and rebuilds it; returns the one-line error to raise."""
    folder = Path(folder)
    target = folder.with_name(f"{folder.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    try:
        os.rename(folder, target)
        where = f"moved it to {target}"
    except FileNotFoundError:
        where = "it was already moved aside"
    except OSError as err:
        where = f"could not move it aside ({err.strerror}): delete it"
    return DamagedCacheError(f"feature cache {folder}: {problem}; {where}; rerun the workflow (or `tunevlseg "
                             "features`) to rebuild it")


def _identity_change(cached, current) -> str:
    if isinstance(cached, dict) and isinstance(current, dict) and "folder" in cached and "folder" in current:
        old, new = cached["folder"], current["folder"]
        return "changed since: " + ", ".join(sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)))
    return f"cache {cached}, now {current}"


class FeatureCache:
    """A cache folder written by :func:`build_features`; :meth:`split` gives one split's reader.

    Opening checks every file's size against ``meta.json`` (and its sha256 with ``checksums``); a
    mismatch moves the cache aside and raises :class:`DamagedCacheError` naming the file.
    """

    def __init__(self, folder: Path, checksums: bool = False):
        self.folder = Path(folder)
        path = self.folder / "meta.json"
        if not path.is_file():
            raise FileNotFoundError(f"no feature cache at {self.folder} (missing meta.json)")
        try:
            self.meta = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise quarantine(self.folder, f"meta.json is not valid JSON ({err})") from None
        if self.meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format version {self.meta.get('version')}, expected {FORMAT_VERSION}; "
                             "recompute the features")
        self.verify(checksums)

    def verify(self, checksums: bool = False) -> None:
        """Every file of the manifest has its recorded size and, with ``checksums``, its sha256 (reads the
        whole cache: 1.2-1.8 s per GB measured on the 2-core dev machine); else quarantine, fail naming it."""
        files = self.meta["files"]
        for name, record in files.items():
            path = self.folder / name
            size = path.stat().st_size if path.is_file() else None
            if size != record["bytes"]:
                found = "missing" if size is None else f"{size:,} bytes"
                raise quarantine(self.folder, f"{name} is {found}, expected {record['bytes']:,} (truncated or "
                                              "damaged)")
        for name, record in files.items() if checksums else ():
            if sha256_of(self.folder / name) != record["sha256"]:
                raise quarantine(self.folder, f"{name} does not match its sha256 in meta.json (damaged)")

    @property
    def views(self) -> int:
        return int(self.meta["views"])

    def check(self, model: str, weights: str, prepared_dir: Path) -> None:
        """Fail, naming the folder, unless the cache was computed for this model, prepared data and weights
        content (``study.weights_identity``; a cache of other weights content is stale: moved aside)."""
        expected = dict(model=model, manifest_sha256=manifest_hash(prepared_dir))
        wrong = {k: (self.meta.get(k), v) for k, v in expected.items() if self.meta.get(k) != v}
        if wrong:
            detail = "; ".join(f"{k}: cache {a!r}, cell {b!r}" for k, (a, b) in wrong.items())
            raise ValueError(f"feature cache {self.folder} was computed for other inputs ({detail}); "
                             "recompute it (snakemake reruns the features rule when its inputs change)")
        cached, current = self.meta.get("weights_identity"), weights_identity(weights)
        if cached != current:
            raise quarantine(self.folder, f"computed for other weights content than {weights} "
                                          f"({_identity_change(cached, current)})")

    def split(self, name: str) -> FeatureSplit:
        return FeatureSplit(self.folder, name, self.meta)


def _pread_into(fd: int, buffer: np.ndarray, position: int) -> int:
    """Fill ``buffer`` (uint8) from ``position``; returns the bytes read (fewer only at the end of the file)."""
    done = 0
    while done < buffer.size:
        n = os.preadv(fd, [buffer[done:]], position + done)
        if n == 0:
            break
        done += n
    return done


class StoredArray:
    """One ``(V, n_images, ...)`` array of a cache, read with ``pread``: a file cut short while in use is an
    error naming it (a memory map dies with SIGBUS instead). Picklable: each process opens its own handle."""

    def __init__(self, path: Path):
        self.path, self._file = Path(path), None
        with open(self.path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(fh)
            except (ValueError, EOFError) as err:
                raise _Damaged(f"{self.path.name} has no valid .npy header ({err})") from None
            self.offset, size = fh.tell(), os.fstat(fh.fileno()).st_size
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = math.prod(self.shape[2:]) * self.dtype.itemsize
        expected = self.offset + math.prod(self.shape) * self.dtype.itemsize
        if fortran or len(self.shape) < 2 or size != expected:
            raise _Damaged(f"{self.path.name} is {size:,} bytes, expected {expected:,} (truncated or damaged)")

    def take(self, views, rows) -> np.ndarray:
        """The rows ``rows[j]`` of views ``views[j]``, stacked: shape ``(len(rows), ...)``."""
        if self._file is None:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed when the array is collected
        out = np.empty((len(rows), *self.shape[2:]), self.dtype)
        buffers = out.reshape(len(rows), -1).view(np.uint8)
        for j, (view, row) in enumerate(zip(views, rows, strict=True)):
            position = self.offset + (int(view) * self.shape[1] + int(row)) * self.row_bytes
            if _pread_into(self._file.fileno(), buffers[j], position) != self.row_bytes:
                raise _Damaged(f"{self.path.name} ends before image row {int(row)} of view {int(view)} (cut short "
                               "while in use)")
        return out

    def __getstate__(self):
        return {**self.__dict__, "_file": None}


class FeatureSplit:
    """One split of a cache (arrays read with ``pread``); picklable (DataLoader workers reopen the files)."""

    def __init__(self, folder: Path, split: str, meta: dict):
        self.folder, self.split, self.meta = Path(folder), split, meta
        self.n_maps = len(meta["maps"])
        self.input_size = tuple(meta["input_size"]) if meta.get("input_size") else None
        self._open()

    def _open(self) -> None:
        f = self.folder
        try:
            arrays = [StoredArray(f / name) for name in _array_names(self.split, self.n_maps)]
            self.rows = np.load(f / f"{self.split}_rows.npy")
            self.view_params = None
            if self.split == "train" and (f / "train_views.npz").is_file():
                with np.load(f / "train_views.npz") as z:
                    self.view_params = {k: z[k] for k in PARAM_KEYS}
        except (_Damaged, ValueError, EOFError, OSError) as err:
            raise quarantine(f, str(err)) from None
        self.maps, self.pooled = arrays[:-1], arrays[-1]
        n = self.pooled.shape[1]
        if self.rows.size and int(self.rows.max()) >= n:
            raise ValueError(f"{f}: {self.split}_rows.npy points past the {n} cached images")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("rows", "maps", "pooled", "view_params")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def views(self) -> int:
        """Augmented views per image (0 outside train)."""
        return int(self.maps[0].shape[0]) - 1

    def params_of(self, view: int, index: int) -> dict:
        """The augmentation parameters view ``view`` applied to sample ``index``'s image."""
        if view == 0:
            return identity_params()
        row = self.rows[index]
        return {k: self.view_params[k][view, row] for k in PARAM_KEYS}

    def read(self, index: int, view: int = 0) -> tuple[torch.Tensor, ...]:
        """The stored (maps..., pooled) of sample ``index`` in ``view``, as CPU tensors of the cache dtype."""
        return tuple(t[0] for t in self.read_batch(np.asarray([index]), np.asarray([view])))

    def read_batch(self, indices: np.ndarray, views: np.ndarray) -> tuple[torch.Tensor, ...]:
        """(maps..., pooled) of samples ``indices`` in ``views`` (one read per row of each array), batch first."""
        rows = self.rows[indices]
        try:
            return tuple(torch.from_numpy(a.take(views, rows)) for a in (*self.maps, self.pooled))
        except _Damaged as err:
            raise quarantine(self.folder, str(err)) from None

    def features(self, tensors, device, dtype=torch.float32) -> ImageFeatures:
        """Batched (maps..., pooled) → :class:`ImageFeatures` on ``device`` in ``dtype``."""
        moved = [t.to(device, non_blocking=True).to(dtype) for t in tensors]
        return ImageFeatures(tuple(moved[:-1]), moved[-1], self.input_size)


__all__ = ["DTYPES", "DamagedCacheError", "FeatureCache", "FeatureSplit", "StoredArray", "build_features",
           "check_space", "image_rows", "preallocate", "quarantine"]
