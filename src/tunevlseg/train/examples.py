"""Qualitative examples of one trial: a few fixed test images, their masks and predicted probabilities.

The report's qualitative panel (:mod:`tunevlseg.report.qualitative`) shows, for every cell, the
prediction of the best trial on the same ``k`` test samples.  The samples are picked by position
(evenly spaced over the test split), so every cell of a dataset stores the same ones.  Arrays are
kept at the cached resolution, shrunk to at most ``max_side`` pixels so that saving them for every
trial stays cheap (about 0.1 MB per trial at k=4, 128 px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.atomic import atomic_write
from ..data.cache import PreparedSplit, SegmentationDataset
from .checkpoint import load_trainable
from .loop import autocast_for, pick_device

__all__ = ["EXAMPLE_KEYS", "example_indices", "save_examples"]

#: Arrays every examples file holds.
EXAMPLE_KEYS = ("image", "gt", "prob", "ids", "index", "prompt")


def example_indices(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` distinct indices evenly spaced over ``range(n)`` (first and last included)."""
    if n <= 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))


def _shrink(x: torch.Tensor, max_side: int, mode: str) -> torch.Tensor:
    """Resize (B, C, H, W) so that the longer side is at most ``max_side``."""
    h, w = x.shape[-2:]
    if max(h, w) <= max_side:
        return x
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


@torch.no_grad()
def save_examples(adapter, learner, split: PreparedSplit, out_path: Path, k: int = 4, max_side: int = 128,
                  device: torch.device | str | None = None, amp: bool = True,
                  checkpoint: Path | None = None) -> Path:
    """Predict ``k`` fixed test samples with ``adapter`` + ``learner`` and save them as an npz.

    ``checkpoint`` (a ``best.pt`` of trainable parameters) is loaded into ``learner`` first when
    given.  The file holds ``image`` uint8 (k, h, w, 3), ``gt`` uint8 (k, h, w) in {0, 1},
    ``prob`` float16 (k, h, w) = sigmoid of the logits, ``ids`` / ``prompt`` (str) and ``index``
    (position in the split), all at the cached resolution shrunk to ``max_side`` (bilinear for
    the image and the logits, nearest for the mask).  Written atomically; returns ``out_path``.
    """
    device = pick_device(device) if isinstance(device, str) or device is None else device
    if checkpoint is not None:
        load_trainable(learner, checkpoint)
    indices = example_indices(len(split), k)
    if indices.size == 0:
        raise ValueError(f"{split.prepared_dir}: the {split.split} split is empty; no examples to save")
    dataset = SegmentationDataset(split, augment=False)
    items = [dataset[int(i)] for i in indices]
    images = torch.stack([it["image"] for it in items])
    masks = torch.stack([it["mask"] for it in items])
    prompts = [it["prompt"] for it in items]
    was_training = learner.training
    adapter.to(device)
    learner.to(device).eval()
    try:
        text = adapter.tokenize(prompts, learner.text_ctx)
        with autocast_for(torch.device(device), amp):
            logits = adapter(images.to(device), text, learner).float().cpu()
    finally:
        learner.train(was_training)
    logits = _shrink(logits.reshape(len(items), 1, *logits.shape[-2:]), max_side, "bilinear")
    images = _shrink(images, max_side, "bilinear")
    masks = _shrink(masks, max_side, "nearest")
    arrays = dict(
        image=(images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
        gt=(masks[:, 0] > 0.5).to(torch.uint8).numpy(),
        prob=torch.sigmoid(logits[:, 0]).numpy().astype(np.float16),
        ids=np.asarray([split.ids[int(i)] for i in indices], dtype=str),
        index=indices,
        prompt=np.asarray(prompts, dtype=str),
    )
    out_path = Path(out_path)
    with atomic_write(out_path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return out_path
