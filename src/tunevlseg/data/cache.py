"""Reading a prepared cache: one split as memory-mapped arrays, and the torch Dataset."""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tunevlseg.data.spec import SPLITS


def manifest_hash(prepared_dir: Path) -> str:
    """sha256 of ``prepared_dir/manifest.csv`` (identifies the cache's content and split)."""
    return hashlib.sha256((Path(prepared_dir) / "manifest.csv").read_bytes()).hexdigest()


class PreparedSplit:
    """One split of a prepared cache.

    ``images`` (N,H,W,3) and ``masks`` (N,H,W) are read-only uint8 memory maps;
    ``ids``, ``groups`` and ``prompts`` follow the same order. ``prompt_key``
    picks the manifest's prompt column (``"p1"`` = class phrase + ".";
    ``"p0"`` = empty prompt).
    """

    def __init__(self, prepared_dir: Path, split: str, prompt_key: str = "p1"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.prepared_dir, self.split, self.prompt_key = Path(prepared_dir), split, prompt_key
        manifest = self.prepared_dir / "manifest.csv"
        if not manifest.is_file():
            raise FileNotFoundError(f"no prepared cache at {self.prepared_dir} (missing manifest.csv)")
        with open(manifest, newline="") as f:
            reader = csv.DictReader(f)
            if prompt_key not in (reader.fieldnames or []):
                raise ValueError(f"prompt key {prompt_key!r} not in {manifest} columns {reader.fieldnames}")
            self.rows = [r for r in reader if r["split"] == split]
        self.ids = [r["id"] for r in self.rows]
        self.groups = [r["group"] for r in self.rows]
        self.prompts = [r[prompt_key] for r in self.rows]
        self._open()

    def _open(self) -> None:
        self.images = np.load(self.prepared_dir / f"{self.split}_images.npy", mmap_mode="r")
        self.masks = np.load(self.prepared_dir / f"{self.split}_masks.npy", mmap_mode="r")
        if not len(self.images) == len(self.masks) == len(self.rows):
            raise ValueError(
                f"{self.prepared_dir}: {self.split} arrays hold {len(self.images)}/{len(self.masks)} "
                f"samples but manifest.csv lists {len(self.rows)}"
            )
        self._originals = None

    def __getstate__(self):  # pickle without the arrays (DataLoader workers re-open the maps)
        return {k: v for k, v in self.__dict__.items() if k not in ("images", "masks", "_originals")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def size(self) -> int:
        """Side length of the cached images."""
        return int(self.images.shape[1])

    def original_size(self, i: int) -> tuple[int, int]:
        """(H, W) of sample ``i`` before resizing."""
        return int(self.rows[i]["orig_h"]), int(self.rows[i]["orig_w"])

    def original_mask(self, i: int) -> np.ndarray:
        """Original-size (H, W) uint8 {0,1} mask of sample ``i`` (stored for the test split only)."""
        if self.split != "test":
            raise ValueError(f"original-size masks are kept for the test split only, not {self.split!r}")
        if self._originals is None:
            self._originals = np.load(self.prepared_dir / "test_masks_original.npz")
        return self._originals[self.ids[i]]


class SegmentationDataset(torch.utils.data.Dataset):
    """Torch view of a :class:`PreparedSplit` (no image decoding: reads the memory maps).

    Items: ``image`` float32 (3,H,W) in [0,1], ``mask`` float32 (1,H,W) in {0,1},
    ``prompt`` str, ``index`` int. ``augment=True`` applies, each with p=0.2, a
    mild affine (scale 0.98–1.02, shift ±2 %, rotation ±5°; mask resampled
    nearest) and brightness/contrast ±0.1. Augmentation is deterministic given
    ``seed``, ``index`` and the epoch set by :meth:`set_epoch`.
    """

    def __init__(self, split: PreparedSplit, augment: bool = False, seed: int = 0):
        self.split, self.augment, self.seed, self.epoch = split, augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(np.array(self.split.images[index])).permute(2, 0, 1).float() / 255.0
        mask = torch.from_numpy(np.array(self.split.masks[index])).float()[None]
        if self.augment:
            image, mask = augment_pair(image, mask, np.random.default_rng([self.seed, self.epoch, index]))
        return {"image": image, "mask": mask, "prompt": self.split.prompts[index], "index": index}


def augment_pair(image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator, p: float = 0.2):
    """Random mild affine (p) and brightness/contrast (p) on a (3,H,W) image and (1,H,W) mask."""
    if rng.random() < p:
        angle = math.radians(rng.uniform(-5, 5))
        scale = rng.uniform(0.98, 1.02)
        tx, ty = rng.uniform(-0.04, 0.04, 2)  # ±2 % of the image = ±0.04 in [-1, 1] coordinates
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[[cos, -sin, tx], [sin, cos, ty]]], dtype=torch.float32)
        grid = F.affine_grid(theta, (1, *image.shape), align_corners=False)
        image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        mask = F.grid_sample(mask[None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    if rng.random() < p:
        contrast, brightness = 1.0 + rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
        mean = image.mean()
        image = ((image - mean) * contrast + mean + brightness).clamp(0.0, 1.0)
    return image, mask
