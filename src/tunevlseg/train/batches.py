"""The training data path: uint8 batches read from the memory maps (in DataLoader workers), pinned, moved
to the device, converted and augmented there; with a feature cache, the cached image features instead of
the frozen encoder.

* Items are uint8 (H, W, 3) images and (H, W) masks straight from the prepared arrays — 4× fewer
  bytes than float32 through the worker queue and the host-to-device copy.
* The sampler yields ``(index, epoch)``, so workers (persistent across epochs) draw each sample's
  augmentation parameters for the right epoch: :meth:`tunevlseg.train.augment.Augment.params`.
* Shuffling uses the loader's own seeded generator (saved in ``resume.pt``): the order of every
  epoch is that of ``DataLoader(shuffle=True, generator=…)``.
* On the device: ``images`` float (B, 3, H, W) in [0, 1] (channels_last when asked: CNN encoders on
  CUDA), ``masks`` float (B, 1, H, W), then :meth:`Augment.apply` on the whole batch.
* Workers start from a fork server (:func:`worker_context`), not by forking the training process: a
  forked worker keeps the pages of the model and activations the trainer rewrites afterwards
  (copy-on-write), up to the trainer's whole heap each (measured 7 GB per worker for CRIS fine-tuning).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..data.cache import PreparedSplit
from ..models.base import ImageFeatures
from .augment import PARAM_KEYS, Augment, changed


#: Modules the fork server imports once, so that each worker it forks starts in milliseconds.
WORKER_PRELOAD = ["torch", "numpy", "tunevlseg.train.batches"]


def worker_context(method: str | None = None):
    """The multiprocessing context DataLoader workers start from: ``forkserver`` (``spawn`` where there is
    none). Its server is a fresh interpreter that has imported only :data:`WORKER_PRELOAD`: workers forked
    from it share none of the training process's memory. ``method`` overrides (e.g. ``fork``, to measure)."""
    method = method or ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    if method == "forkserver":
        multiprocessing.set_forkserver_preload(WORKER_PRELOAD)  # read when the server starts (once per process)
    return multiprocessing.get_context(method)


def drops_last(n: int, batch_size: int, shuffle: bool) -> bool:
    """Whether a loader drops its last batch: only a training (shuffled) epoch whose last batch would hold
    ONE sample (that sample is seen in other epochs: the order is shuffled). BatchNorm in train mode (CRIS's
    neck when fine-tuned or pretrained) cannot normalise a batch of one; evaluation sees every sample."""
    return shuffle and batch_size > 1 and n % batch_size == 1


class EpochSampler(Sampler):
    """Yields ``(index, epoch)``: in order, or shuffled by ``generator``; :meth:`set_epoch` before each epoch.

    Shuffled, every epoch draws from ``generator`` one int64, ``randperm(n)`` and, once exhausted, one more
    ``randperm(n)`` — exactly what ``DataLoader(shuffle=True, generator=generator, num_workers=0)`` draws
    (the int64 seeds its workers; ``RandomSampler`` draws an empty tail permutation) — so the order does not depend on ``num_workers`` or persistent workers, and a generator
    state saved by an earlier version of the loop resumes the same order.
    """

    def __init__(self, n: int, generator: torch.Generator | None = None):
        self.n, self.generator, self.epoch = n, generator, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        epoch = self.epoch
        if self.generator is None:
            order = range(self.n)
        else:
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
            order = torch.randperm(self.n, generator=self.generator).tolist()
        for i in order:
            yield int(i), epoch
        if self.generator is not None:  # RandomSampler draws one more (empty) tail permutation
            torch.randperm(self.n, generator=self.generator)

    def __len__(self) -> int:
        return self.n


class SampleSet(Dataset):
    """Items of one prepared split: uint8 ``image`` (H, W, 3) and ``mask`` (H, W), ``prompt``, ``index``;
    with ``augment`` the sample's parameters ``aug``; with ``features`` the cached ``features`` (the view
    the sample uses) and ``view``."""

    def __init__(self, split: PreparedSplit, augment: Augment | None = None, features=None):
        if features is not None and len(features) != len(split):
            raise ValueError(f"feature cache {features.folder} ({features.split}) has {len(features)} samples, "
                             f"the prepared split {split.prepared_dir} has {len(split)}")
        self.split, self.augment, self.features = split, augment, features

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = {"image": torch.from_numpy(np.array(self.split.images[index])),
                "mask": torch.from_numpy(np.array(self.split.masks[index])),
                "prompt": self.split.prompts[index], "index": index}
        params = self.augment.params(epoch, index) if self.augment is not None else None
        if self.features is not None:
            view = 0
            if params is not None and self.features.views and (params["affine"] or params["photometric"]):
                view = 1 + self.augment.pick(epoch, index, self.features.views)
                params = self.features.params_of(view, index)  # what the stored view applied
            item["features"] = self.features.read(index, view)
            item["view"] = view
        if params is not None:
            item["aug"] = {k: torch.as_tensor(params[k]) for k in PARAM_KEYS}
        return item

    def __getitems__(self, keys: list) -> dict:
        """A whole batch at once (what the DataLoader calls): one read per memory-mapped array, in the
        layout ``default_collate`` gives the items of :meth:`__getitem__`."""
        pairs = [key if isinstance(key, tuple) else (key, 0) for key in keys]
        index = np.asarray([i for i, _ in pairs], dtype=np.int64)
        batch = {"image": torch.from_numpy(self.split.images[index]), "mask": torch.from_numpy(self.split.masks[index]),
                 "prompt": [self.split.prompts[i] for i in index], "index": torch.from_numpy(index)}
        params = [self.augment.params(e, i) for i, e in pairs] if self.augment is not None else None
        if self.features is not None:
            views = np.zeros(len(pairs), dtype=np.int64)
            if params is not None and self.features.views:
                for j, (i, e) in enumerate(pairs):
                    if params[j]["affine"] or params[j]["photometric"]:
                        views[j] = 1 + self.augment.pick(e, i, self.features.views)
                        params[j] = self.features.params_of(int(views[j]), i)
            batch["features"] = list(self.features.read_batch(index, views))
            batch["view"] = torch.from_numpy(views)
        if params is not None:
            batch["aug"] = {k: torch.as_tensor(np.stack([p[k] for p in params])) for k in PARAM_KEYS}
        return batch


@dataclass
class DeviceBatch:
    """One batch on the device. ``features``: cached image features (None: encode ``images``); ``live``:
    (B,) bool, rows whose features must still be computed from ``images`` (augmented, no stored view)."""

    images: torch.Tensor
    masks: torch.Tensor
    prompts: list[str]
    index: torch.Tensor
    features: ImageFeatures | None = None
    live: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


class Batches:
    """The batches of one split on ``device``: seeded shuffling, augmentation, optional feature cache.

    ``generator`` is the shuffling state (saved and restored by the resume state); call
    :meth:`set_epoch` before iterating an epoch.
    """

    def __init__(self, split: PreparedSplit, batch_size: int, device: torch.device, *, shuffle: bool = False,
                 seed: int = 0, augment: Augment | None = None, features=None, workers: int = 0,
                 channels_last: bool = False, context: str | None = None):
        self.device, self.augment, self.features = torch.device(device), augment, features
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        dataset = SampleSet(split, augment, features)
        self.sampler = EpochSampler(len(dataset), self.generator if shuffle else None)
        self.drop_last = drops_last(len(dataset), batch_size, shuffle)
        # the loader's own generator only seeds its workers (items draw nothing at random)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, collate_fn=_collated,
                                 drop_last=self.drop_last,
                                 generator=torch.Generator().manual_seed(seed), num_workers=workers,
                                 persistent_workers=workers > 0, pin_memory=self.device.type == "cuda",
                                 multiprocessing_context=worker_context(context) if workers > 0 else None)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield self.to_device(batch)

    def to_device(self, batch: dict) -> DeviceBatch:
        """Move a collated CPU batch to the device, convert, and augment there."""
        dev = self.device
        images = batch["image"].to(dev, non_blocking=True).permute(0, 3, 1, 2)
        images = images.contiguous(memory_format=torch.channels_last if self.channels_last else
                                   torch.contiguous_format).float().div_(255.0)
        masks = batch["mask"].to(dev, non_blocking=True)[:, None].float()
        out = DeviceBatch(images, masks, list(batch["prompt"]), batch["index"])
        aug = batch.get("aug")
        if self.features is not None:
            out.features = self.features.features(batch["features"], dev)
            if aug is not None and self.features.views:  # stored views: only the masks need warping
                out.masks = Augment.apply_masks(out.masks, aug)
                return out
            if aug is not None:
                out.live = changed(aug).to(dev)
        if aug is not None:
            out.images, out.masks = Augment.apply(out.images, out.masks, aug)
        return out


def _collated(batch):
    """The batch ``SampleSet.__getitems__`` built (one list of items from other datasets)."""
    return batch if isinstance(batch, dict) else default_collate(batch)


def logits_of(adapter, learner, batch: DeviceBatch, text, forward=None, forward_frozen=None) -> torch.Tensor:
    """Mask logits of a batch: the full forward, or the cached features (plus the live rows) through the rest.

    ``forward`` / ``forward_frozen`` replace ``adapter.__call__`` / ``adapter.forward_frozen`` (e.g. compiled).
    """
    forward = adapter if forward is None else forward  # (a compiled module has no truth value)
    forward_frozen = adapter.forward_frozen if forward_frozen is None else forward_frozen
    if batch.features is None:
        return forward(batch.images, text, learner)
    features = batch.features
    if batch.live is not None and bool(batch.live.any()):
        rows = batch.live.nonzero().flatten()
        fresh = adapter.encode_image(adapter.normalize(batch.images[rows]), None,
                                     pooled=learner is not None and learner.uses_image_feature)
        maps = []
        for cached, new in zip(features.maps, fresh.maps, strict=True):
            cached[rows] = new.to(cached.dtype)
            maps.append(cached)
        pooled = features.pooled
        if fresh.pooled is not None:
            pooled[rows] = fresh.pooled.to(pooled.dtype)
        features = ImageFeatures(tuple(maps), pooled, features.input_size)
    return forward_frozen(features, text, learner)


__all__ = ["Batches", "DeviceBatch", "EpochSampler", "SampleSet", "WORKER_PRELOAD", "logits_of", "worker_context"]
