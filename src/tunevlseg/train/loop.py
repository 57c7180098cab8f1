"""The training loop for one trial: frozen model, trainable prompt learner, best-on-validation checkpoint."""

from __future__ import annotations

import csv
import logging
import math
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import preempt
from ..cells import TrialFiles
from ..data.cache import PreparedSplit, SegmentationDataset
from ..inference.runtime import autocast_for, pick_device
from .augment import Augment
from .batches import Batches, drops_last, logits_of
from .checkpoint import load_resume_state, load_trainable, save_resume_state, save_trainable
from .loss import DiceCELoss
from .metrics import dice_iou, logits_to_mask, summarize

log = logging.getLogger(__name__)
#: ``training.cache_frozen`` values: ``auto`` = read the frozen-feature cache where the method allows it.
CACHE_MODES = ("auto", "off")


class TrialFailed(RuntimeError):
    """A trial that cannot produce a result (e.g. the loss became NaN)."""


@dataclass
class TrainSettings:
    """Optimisation settings of one trial (docs/how-to/configure.md: `training.*`).

    Adding a setting: give it the default that keeps the old behaviour. A study's fingerprint hashes
    only the settings that differ from their defaults (:meth:`non_defaults`), so finished studies stay
    valid after the upgrade; changing a default or what a setting means needs
    ``tunevlseg.tune.FINGERPRINT_VERSION`` bumped (every study is then retrained).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 20
    batch_size: int = 32
    early_stopping_patience: int = 7
    plateau_patience: int = 5
    plateau_factor: float = 0.2
    lambda_dice: float = 1.0
    lambda_ce: float = 0.2
    seed: int = 0
    num_workers: int = 0
    amp: bool = True
    progress: bool = True
    augment: bool = True  # the paper's mild affine + brightness/contrast (train/augment.py)
    # speed (docs/explanation/speed.md): none of them changes what is trained, except cache_dtype float16 (rounding)
    cache_frozen: str = "auto"
    cache_views: int = 0
    cache_dtype: str = "float16"
    compile: bool = False

    #: Settings that change how a trial runs, not what it trains (not part of a study's fingerprint).
    RUN_ONLY: ClassVar[tuple[str, ...]] = ("num_workers", "progress", "compile")

    def non_defaults(self) -> dict:
        """The settings that differ from their defaults, run-only ones left out (what a fingerprint hashes)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in self.RUN_ONLY and getattr(self, f.name) != f.default}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        """Settings from a config slice; unknown keys are an error naming the allowed ones."""
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; allowed: {sorted(cls.__dataclass_fields__)}")
        settings = cls(**values)
        if settings.cache_frozen is False:  # YAML 1.1 reads an unquoted off as false
            settings.cache_frozen = "off"
        if settings.cache_frozen not in CACHE_MODES:
            raise ValueError(f"training.cache_frozen must be one of {CACHE_MODES}, got {settings.cache_frozen!r}")
        return settings


@dataclass
class TrainResult:
    """What a finished training run reports."""

    best_val_dice: float
    best_epoch: int
    last_val_loss: float
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    pruned: bool = False  # stopped early by ``on_epoch`` (an Optuna pruner)


def make_loss(settings: TrainSettings) -> DiceCELoss:
    """Dice + BCE on (B, 1, H, W) logits and masks (MONAI's DiceCELoss, without importing MONAI: train/loss.py)."""
    return DiceCELoss(lambda_dice=settings.lambda_dice, lambda_ce=settings.lambda_ce)


def make_loader(split: PreparedSplit, batch_size: int, shuffle: bool, augment: bool, seed: int, workers: int) -> DataLoader:
    """A DataLoader over a prepared split; shuffling and augmentation are seeded."""
    generator = torch.Generator().manual_seed(seed)
    dataset = SegmentationDataset(split, augment=augment, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
                      drop_last=drops_last(len(dataset), batch_size, shuffle))


def train_prompts(adapter, learner, train: PreparedSplit, val: PreparedSplit, settings: TrainSettings,
                  trial: TrialFiles | Path, device: torch.device | None = None, features=None,
                  on_epoch: Callable[[list[dict]], bool] | None = None) -> TrainResult:
    """Train ``learner`` on ``train`` with the frozen ``adapter``; keep the best validation checkpoint.

    Writes ``epochs.csv`` (one row per epoch) and ``best.pt`` (trainable
    parameters only) in the trial folder (:class:`tunevlseg.cells.TrialFiles`). Raises
    ``TrialFailed`` on a non-finite loss.

    ``features``: a :class:`tunevlseg.features.FeatureCache` of the adapter's unprompted image
    features (only for learners without vision prompts): training and validation then run
    ``adapter.forward_frozen`` on them, encoding live only the training samples the augmentation
    changes when the cache stores no augmented views.

    ``on_epoch(history)`` is called after every epoch that does not end training (and once after
    resuming such an epoch); returning True stops the trial there (``TrainResult.pruned``): the
    Optuna pruner's hook.

    After every epoch the whole training state (trainable parameters, optimizer, scheduler,
    early-stopping counters, history, RNG states) is saved atomically to ``resume.pt``; when
    that file exists, training continues after its last epoch, and a run that had finished
    returns its result without training again. A resumed run gives the same result as an
    uninterrupted one (on CPU; bit-exact up to non-deterministic GPU kernels). A stop signal
    (:mod:`tunevlseg.preempt`) raises ``Preempted`` after the current batch.
    """
    device = device or pick_device()
    files = trial if isinstance(trial, TrialFiles) else TrialFiles(str(trial))
    files.path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed % 2**32)
    channels_last = prepare_adapter(adapter, device)
    learner.to(device)
    learner.train()
    if features is not None and "vision" in learner.modalities:
        raise ValueError(f"{type(learner).__name__} prompts the image encoder: it cannot train on cached features")
    forwards = Forwards(adapter, settings.compile)
    loss_fn = make_loss(settings)
    optimizer = _optimizer(learner, settings)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=settings.plateau_factor, patience=settings.plateau_patience
    )
    workers = settings.num_workers
    train_batches = Batches(train, settings.batch_size, device, shuffle=True, seed=settings.seed,
                            augment=Augment(settings.seed) if settings.augment else None,
                            features=_split_of(features, "train"), workers=workers, channels_last=channels_last)
    val_batches = Batches(val, settings.batch_size, device, features=_split_of(features, "val"), workers=workers,
                          channels_last=channels_last)
    progress = dict(best=-1.0, best_epoch=-1, stale=0, history=[], last_val_loss=float("nan"), next_epoch=0,
                    done=False, pruned=False)
    resume_path = files.resume
    if resume_path.is_file():
        progress = load_resume_state(resume_path, learner, optimizer, scheduler, train_batches.generator, device)
        progress.setdefault("pruned", False)
        if progress["history"]:  # epochs.csv may be older than the state when the kill came in between
            _write_history(progress["history"], files.epochs_csv)
        if progress["history"] and not progress["done"] and on_epoch is not None and on_epoch(progress["history"]):
            _stop_pruned(progress, resume_path, learner, optimizer, scheduler, train_batches.generator)
    history = progress["history"]
    epochs = tqdm(range(progress["next_epoch"], settings.epochs), desc=f"train {files.path.name}",
                  disable=not settings.progress or progress["done"], leave=False)
    for epoch in ([] if progress["done"] else epochs):
        started = time.perf_counter()
        train_batches.set_epoch(epoch)
        train_loss = _train_epoch(adapter, learner, train_batches, loss_fn, optimizer, device, settings, forwards)
        val_loss, val_dice = _validate(adapter, learner, val_batches, loss_fn, device, settings.amp, forwards)
        progress["last_val_loss"] = val_loss
        scheduler.step(val_loss)
        row = dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_dice=val_dice,
                   lr=optimizer.param_groups[0]["lr"], seconds=round(time.perf_counter() - started, 3))
        history.append(row)
        if val_dice > progress["best"]:
            progress.update(best=val_dice, best_epoch=epoch, stale=0)
            save_trainable(learner, files.checkpoint)
        else:
            progress["stale"] += 1
        epochs.set_postfix(loss=f"{train_loss:.3f}", val_dice=f"{val_dice:.3f}", best=f"{progress['best']:.3f}")
        _write_history(history, files.epochs_csv)
        progress["next_epoch"] = epoch + 1
        progress["done"] = progress["stale"] >= settings.early_stopping_patience or epoch + 1 >= settings.epochs
        save_resume_state(resume_path, progress, learner, optimizer, scheduler, train_batches.generator)
        if not progress["done"] and on_epoch is not None and on_epoch(history):
            _stop_pruned(progress, resume_path, learner, optimizer, scheduler, train_batches.generator)
        if progress["done"]:
            break
    return TrainResult(progress["best"], progress["best_epoch"], progress["last_val_loss"], len(history), history,
                       pruned=progress["pruned"])


def _stop_pruned(progress, resume_path, learner, optimizer, scheduler, generator) -> None:
    """Record the pruner's stop in the resume state, so that a rerun returns at once (whatever the pruner
    would say by then)."""
    progress.update(done=True, pruned=True)
    save_resume_state(resume_path, progress, learner, optimizer, scheduler, generator)


def _split_of(features, split: str):
    return None if features is None else features.split(split)


def prepare_adapter(adapter, device: torch.device) -> bool:
    """Move the frozen model to ``device``; on CUDA, a convolutional image encoder (no vision tokens: CRIS)
    is switched to channels_last. Returns whether images should be channels_last too."""
    adapter.to(device)
    channels_last = device.type == "cuda" and "vision" not in adapter.prompt_layers()
    if channels_last:
        adapter.to(memory_format=torch.channels_last)
    return channels_last


class Forwards:
    """``adapter(...)`` and ``adapter.forward_frozen(...)``, compiled with ``torch.compile`` when asked.

    A compiled function is tried on its first training step (forward and backward); if compiling fails,
    a warning names the error and the run continues eagerly (the failed step is redone).
    """

    def __init__(self, adapter, enabled: bool):
        self.enabled = enabled
        self.untested = enabled
        self.forward, self.forward_frozen = adapter, adapter.forward_frozen
        if enabled:
            self.forward, self.forward_frozen = torch.compile(adapter), torch.compile(adapter.forward_frozen)
        self._eager = (adapter, adapter.forward_frozen)

    def disable(self, err: BaseException) -> None:
        log.warning("torch.compile failed (%s: %s); training continues without it", type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "")
        self.forward, self.forward_frozen = self._eager
        self.enabled = self.untested = False

    def logits(self, adapter, learner, batch, text) -> torch.Tensor:
        if not self.untested:
            return logits_of(adapter, learner, batch, text, self.forward, self.forward_frozen)
        try:
            return logits_of(adapter, learner, batch, text, self.forward, self.forward_frozen)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - any compiler failure: fall back
            self.disable(err)
            return logits_of(adapter, learner, batch, text)


def _optimizer(learner, settings: TrainSettings) -> torch.optim.Optimizer:
    decay_ids = {id(p) for p in learner.decay_parameters()}
    params = [p for p in learner.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) in decay_ids], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if id(p) not in decay_ids], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.lr)


def _train_epoch(adapter, learner, batches: Batches, loss_fn, optimizer, device, settings, forwards) -> float:
    learner.train()
    total, count = 0.0, 0
    for batch in batches:
        text = adapter.tokenize(batch.prompts, learner.text_ctx)
        loss = _step(adapter, learner, batch, text, loss_fn, optimizer, device, settings, forwards)
        if not torch.isfinite(loss):
            raise TrialFailed(f"non-finite training loss ({loss.item()})")
        optimizer.step()
        preempt.check()  # after a whole step: the state of the last finished epoch is on disk
        total += loss.item() * len(batch)
        count += len(batch)
    return total / max(count, 1)


def _step(adapter, learner, batch, text, loss_fn, optimizer, device, settings, forwards) -> torch.Tensor:
    """Forward and backward of one batch (gradients left for ``optimizer.step``)."""
    def run():
        with autocast_for(device, settings.amp):
            logits = forwards.logits(adapter, learner, batch, text)
        loss = loss_fn(logits.float(), batch.masks)
        optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
        return loss

    if not forwards.untested:
        return run()
    try:  # the first compiled step: a backward that fails to compile falls back too
        loss = run()
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # noqa: BLE001
        if not forwards.enabled:
            raise
        forwards.disable(err)
        loss = run()
    forwards.untested = False
    return loss


@torch.no_grad()
def _validate(adapter, learner, batches: Batches, loss_fn, device, amp: bool, forwards=None) -> tuple[float, float]:
    learner.eval()
    losses, dices = [], []
    for batch in batches:
        text = adapter.tokenize(batch.prompts, learner.text_ctx)
        with autocast_for(device, amp):
            logits = (forwards.logits(adapter, learner, batch, text) if forwards is not None
                      else logits_of(adapter, learner, batch, text)).float()
        losses.append(loss_fn(logits, batch.masks).item() * len(batch))
        dice, _ = dice_iou(torch.sigmoid(logits) > 0.5, batch.masks > 0.5)
        dices.append(dice.cpu())
    learner.train()
    n = sum(len(d) for d in dices)
    val_loss = sum(losses) / max(n, 1)
    if not math.isfinite(val_loss):
        raise TrialFailed(f"non-finite validation loss ({val_loss})")
    return val_loss, float(torch.cat(dices).mean()) if dices else float("nan")


def validate(adapter, learner, split: PreparedSplit, loss_fn, batch_size: int, device, amp: bool = True,
             features=None, workers: int = 0) -> tuple[float, float]:
    """Mean loss and mean per-image Dice at the cached resolution (used for model selection).

    ``features``: the split's :class:`tunevlseg.features.FeatureSplit` (cached image features) or None.
    """
    channels_last = prepare_adapter(adapter, device)
    batches = Batches(split, batch_size, device, features=features, workers=workers, channels_last=channels_last)
    return _validate(adapter, learner, batches, loss_fn, device, amp)


@torch.no_grad()
def evaluate_test(adapter, learner, split: PreparedSplit, batch_size: int, device=None, amp: bool = True,
                  checkpoint: Path | None = None, features=None, workers: int = 0) -> list[dict]:
    """Per-image Dice and IoU at threshold 0.5 at each image's original mask size.

    Slices of a volume (a manifest with a ``case`` column) also carry ``case`` and their pixel counts
    (``inter``, ``pred_px``, ``true_px``): :func:`tunevlseg.report.collect.per_volume` sums them per case.

    ``features``: the split's :class:`tunevlseg.features.FeatureSplit` (cached image features) or None.
    """
    device = device or pick_device()
    if checkpoint is not None:
        load_trainable(learner, checkpoint)
    channels_last = prepare_adapter(adapter, device)
    learner.to(device).eval()
    rows = []
    batches = Batches(split, batch_size, device, features=features, workers=workers, channels_last=channels_last)
    for batch in batches:
        text = adapter.tokenize(batch.prompts, learner.text_ctx)
        with autocast_for(device, amp):
            logits = logits_of(adapter, learner, batch, text).float().cpu()
        for logit, index in zip(logits, batch.index.tolist()):
            target = torch.from_numpy(np.asarray(split.original_mask(index)) > 0)
            pred = logits_to_mask(logit, tuple(target.shape))
            dice, iou = dice_iou(pred[None], target[None])
            rows.append(dict(id=split.ids[index], dice=float(dice), iou=float(iou)))
            case = split.rows[index].get("case")
            if case:  # a volume's slice: the pixel counts that per-volume Dice sums over the case
                rows[-1].update(case=case, inter=int((pred & target).sum()), pred_px=int(pred.sum()),
                                true_px=int(target.sum()))
    return rows


def summarize_rows(rows: list[dict]) -> dict:
    """Mean ± std of Dice and IoU over per-image rows."""
    dice_mean, dice_std = summarize([r["dice"] for r in rows])
    iou_mean, iou_std = summarize([r["iou"] for r in rows])
    return dict(test_dice_mean=dice_mean, test_dice_std=dice_std, test_iou_mean=iou_mean,
                test_iou_std=iou_std, n_test=len(rows))


def _write_history(history: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)
