"""The frozen-feature cache: a model's unprompted image features, computed once per (model, weights, dataset, size).

Methods whose image side is frozen and unprompted (``METHODS[m].frozen_image_side`` and tuned:
CoOp, CoCoOp) see the same image features in every epoch, trial and seed. The ``features`` rule
computes them once (``adapter.encode_image(adapter.normalize(images), None, pooled=True)``) into
memory-mapped arrays, shared by every trial and seed of every cell that reads them; training then
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
one of them (picked per trial, epoch and sample), and nothing is encoded live. See the README,
"Speed".
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .data.atomic import atomic_dir
from .data.cache import SPLITS, PreparedSplit, manifest_hash
from .models.base import ImageFeatures
from .train.augment import PARAM_KEYS, Augment, identity_params

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DTYPES = ("float16", "float32")


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


# ---------------------------------------------------------------------------------------- building
@torch.no_grad()
def build_features(adapter, prepared_dir: Path, out_dir: Path, *, model: str, weights: str,
                   model_options: dict | None = None, dtype: str = "float16", views: int = 0, seed: int = 0,
                   batch_size: int = 32, device: torch.device | str = "cpu", amp: bool = True) -> dict:
    """Encode every image of the prepared splits with the frozen ``adapter``; write the cache atomically.

    Returns the meta record (also ``meta.json``). Fails, leaving nothing behind, when a feature does not
    fit ``dtype`` (an overflow to inf in float16: use float32).
    """
    from .train.loop import autocast_for

    if dtype not in DTYPES:
        raise ValueError(f"features: dtype must be one of {DTYPES}, got {dtype!r}")
    if views < 0:
        raise ValueError(f"features: views must be >= 0, got {views}")
    device = torch.device(device)
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    adapter.to(device).eval()
    augment = Augment(seed)
    started = time.perf_counter()
    meta = dict(version=FORMAT_VERSION, model=model, weights=weights, model_options=model_options or {},
                prepared_dir=str(prepared_dir), manifest_sha256=manifest_hash(prepared_dir), dtype=dtype,
                views=int(views), seed=int(seed), device=str(device), amp=bool(amp), splits={})
    with atomic_dir(out_dir) as tmp:
        for split_name in SPLITS:
            split = PreparedSplit(prepared_dir, split_name)
            rows, first = image_rows(split.images)
            np.save(tmp / f"{split_name}_rows.npy", rows)
            n_views = 1 + views if split_name == "train" else 1
            params = [[identity_params() for _ in first]]
            params += [[augment.draw_view(v, r) for r in range(len(first))] for v in range(1, n_views)]
            if split_name == "train":
                np.savez(tmp / "train_views.npz", **{k: np.stack([np.stack([p[k] for p in view]) for view in params])
                                                    for k in PARAM_KEYS})
            arrays = None
            for v in range(n_views):
                for start in range(0, len(first), batch_size):
                    chunk = first[start:start + batch_size]
                    images = torch.from_numpy(np.stack([split.images[i] for i in chunk])).to(device)
                    images = images.permute(0, 3, 1, 2).contiguous().float().div_(255)
                    if v:
                        batch_params = {k: torch.as_tensor(np.stack([params[v][r][k] for r in
                                                                     range(start, start + len(chunk))]))
                                        for k in PARAM_KEYS}
                        images, _ = Augment.apply(images, torch.zeros_like(images[:, :1]), batch_params)
                    with autocast_for(device, amp):
                        feats = adapter.encode_image(adapter.normalize(images), None, pooled=True)
                    tensors = feats.tensors()
                    if arrays is None:
                        arrays = _open_arrays(tmp, split_name, n_views, len(first), tensors, dtype)
                        meta["input_size"] = list(feats.input_size) if feats.input_size else None
                        meta["maps"] = [list(t.shape[1:]) for t in feats.maps]
                        meta["pooled_dim"] = int(feats.pooled.shape[-1])
                    for array, tensor in zip(arrays, tensors, strict=True):
                        values = tensor.float().cpu().numpy().astype(dtype)
                        if not np.isfinite(values).all():
                            raise ValueError(f"features for {prepared_dir} ({split_name}) overflow {dtype}; "
                                             "set training.cache_dtype: float32")
                        array[v, start:start + len(chunk)] = values
            for array in arrays or ():
                array.flush()
            meta["splits"][split_name] = dict(samples=len(rows), images=len(first))
            log.info("features %s: %d samples, %d images, %d view(s)", split_name, len(rows), len(first), n_views)
        meta["bytes"] = sum(p.stat().st_size for p in tmp.iterdir())
        meta["seconds"] = round(time.perf_counter() - started, 2)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def _open_arrays(folder: Path, split: str, n_views: int, n_images: int, tensors, dtype: str) -> list:
    names = [f"{split}_map{i}.npy" for i in range(len(tensors) - 1)] + [f"{split}_pooled.npy"]
    return [np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=(n_views, n_images,
                                                                                    *t.shape[1:]))
            for name, t in zip(names, tensors, strict=True)]


# ----------------------------------------------------------------------------------------- reading
class FeatureCache:
    """A cache folder written by :func:`build_features`; :meth:`split` gives one split's reader."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        path = self.folder / "meta.json"
        if not path.is_file():
            raise FileNotFoundError(f"no feature cache at {self.folder} (missing meta.json)")
        try:
            self.meta = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if self.meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format version {self.meta.get('version')}, expected {FORMAT_VERSION}; "
                             "recompute the features")

    @property
    def views(self) -> int:
        return int(self.meta["views"])

    def check(self, model: str, weights: str, prepared_dir: Path) -> None:
        """Fail, naming the folder, unless the cache was computed for this model, weights and prepared data."""
        expected = dict(model=model, weights=str(weights), manifest_sha256=manifest_hash(prepared_dir))
        wrong = {k: (self.meta.get(k), v) for k, v in expected.items() if self.meta.get(k) != v}
        if wrong:
            detail = "; ".join(f"{k}: cache {a!r}, cell {b!r}" for k, (a, b) in wrong.items())
            raise ValueError(f"feature cache {self.folder} was computed for other inputs ({detail}); "
                             "recompute it (snakemake reruns the features rule when its inputs change)")

    def split(self, name: str) -> FeatureSplit:
        return FeatureSplit(self.folder, name, self.meta)


class FeatureSplit:
    """One split of a cache, memory-mapped; picklable (DataLoader workers re-open the maps)."""

    def __init__(self, folder: Path, split: str, meta: dict):
        self.folder, self.split, self.meta = Path(folder), split, meta
        self.n_maps = len(meta["maps"])
        self.input_size = tuple(meta["input_size"]) if meta.get("input_size") else None
        self._open()

    def _open(self) -> None:
        f = self.folder
        self.rows = np.load(f / f"{self.split}_rows.npy")
        self.maps = [np.load(f / f"{self.split}_map{i}.npy", mmap_mode="r") for i in range(self.n_maps)]
        self.pooled = np.load(f / f"{self.split}_pooled.npy", mmap_mode="r")
        self.view_params = None
        if self.split == "train" and (f / "train_views.npz").is_file():
            with np.load(f / "train_views.npz") as z:
                self.view_params = {k: z[k] for k in PARAM_KEYS}
        n = self.maps[0].shape[1] if self.maps else self.pooled.shape[1]
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
        row = self.rows[index]
        return tuple(torch.from_numpy(np.array(a[view, row])) for a in (*self.maps, self.pooled))

    def read_batch(self, indices: np.ndarray, views: np.ndarray) -> tuple[torch.Tensor, ...]:
        """(maps..., pooled) of samples ``indices`` in ``views`` (one read per array), batch first."""
        rows = self.rows[indices]
        return tuple(torch.from_numpy(a[views, rows]) for a in (*self.maps, self.pooled))

    def features(self, tensors, device, dtype=torch.float32) -> ImageFeatures:
        """Batched (maps..., pooled) → :class:`ImageFeatures` on ``device`` in ``dtype``."""
        moved = [t.to(device, non_blocking=True).to(dtype) for t in tensors]
        return ImageFeatures(tuple(moved[:-1]), moved[-1], self.input_size)


__all__ = ["DTYPES", "FeatureCache", "FeatureSplit", "build_features", "image_rows"]
