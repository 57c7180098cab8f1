"""The training loop for one trial: frozen model, trainable prompt learner, best-on-validation checkpoint."""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import preempt
from ..cells import TrialFiles
from ..data.cache import PreparedSplit, SegmentationDataset
from .checkpoint import load_resume_state, load_trainable, save_resume_state, save_trainable
from .metrics import dice_iou, logits_to_mask, summarize


class TrialFailed(RuntimeError):
    """A trial that cannot produce a result (e.g. the loss became NaN)."""


@dataclass
class TrainSettings:
    """Optimisation settings of one trial (README, "Configuration": `training.*`)."""

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

    #: Settings that change how a trial runs, not its result (not part of a study's fingerprint).
    RUN_ONLY: ClassVar[tuple[str, ...]] = ("num_workers", "progress")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        """Settings from a config slice; unknown keys are an error naming the allowed ones."""
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**values)


@dataclass
class TrainResult:
    """What a finished training run reports."""

    best_val_dice: float
    best_epoch: int
    last_val_loss: float
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def pick_device(preferred: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if preferred == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preferred)


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA GPUs that support it; a no-op context elsewhere."""
    use = enabled and device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use)


def make_loss(settings: TrainSettings) -> DiceCELoss:
    """MONAI DiceCELoss on (B, 1, H, W) logits and masks."""
    return DiceCELoss(sigmoid=True, lambda_dice=settings.lambda_dice, lambda_ce=settings.lambda_ce)


def make_loader(split: PreparedSplit, batch_size: int, shuffle: bool, augment: bool, seed: int, workers: int) -> DataLoader:
    """A DataLoader over a prepared split; shuffling and augmentation are seeded."""
    generator = torch.Generator().manual_seed(seed)
    dataset = SegmentationDataset(split, augment=augment, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers)


def train_prompts(adapter, learner, train: PreparedSplit, val: PreparedSplit, settings: TrainSettings,
                  trial: TrialFiles | Path, device: torch.device | None = None) -> TrainResult:
    """Train ``learner`` on ``train`` with the frozen ``adapter``; keep the best validation checkpoint.

    Writes ``epochs.csv`` (one row per epoch) and ``best.pt`` (trainable
    parameters only) in the trial folder (:class:`tunevlseg.cells.TrialFiles`). Raises
    ``TrialFailed`` on a non-finite loss.

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
    adapter.to(device)
    learner.to(device)
    learner.train()
    loss_fn = make_loss(settings)
    optimizer = _optimizer(learner, settings)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=settings.plateau_factor, patience=settings.plateau_patience
    )
    train_loader = make_loader(train, settings.batch_size, True, True, settings.seed, settings.num_workers)
    progress = dict(best=-1.0, best_epoch=-1, stale=0, history=[], last_val_loss=float("nan"), next_epoch=0,
                    done=False)
    resume_path = files.resume
    if resume_path.is_file():
        progress = load_resume_state(resume_path, learner, optimizer, scheduler, train_loader.generator, device)
        if progress["history"]:  # epochs.csv may be older than the state when the kill came in between
            _write_history(progress["history"], files.epochs_csv)
    history = progress["history"]
    epochs = tqdm(range(progress["next_epoch"], settings.epochs), desc=f"train {files.path.name}",
                  disable=not settings.progress or progress["done"], leave=False)
    for epoch in ([] if progress["done"] else epochs):
        started = time.perf_counter()
        train_loader.dataset.set_epoch(epoch)
        train_loss = _train_epoch(adapter, learner, train_loader, loss_fn, optimizer, device, settings)
        val_loss, val_dice = validate(adapter, learner, val, loss_fn, settings.batch_size, device, settings.amp)
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
        save_resume_state(resume_path, progress, learner, optimizer, scheduler, train_loader.generator)
        if progress["done"]:
            break
    return TrainResult(progress["best"], progress["best_epoch"], progress["last_val_loss"], len(history), history)


def _optimizer(learner, settings: TrainSettings) -> torch.optim.Optimizer:
    decay_ids = {id(p) for p in learner.decay_parameters()}
    params = [p for p in learner.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) in decay_ids], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if id(p) not in decay_ids], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.lr)


def _train_epoch(adapter, learner, loader, loss_fn, optimizer, device, settings) -> float:
    learner.train()
    total, count = 0.0, 0
    for batch in loader:
        images, masks = batch["image"].to(device), batch["mask"].to(device)
        text = adapter.tokenize(list(batch["prompt"]), learner.text_ctx)
        with autocast_for(device, settings.amp):
            logits = adapter(images, text, learner)
        loss = loss_fn(logits.float(), masks)
        if not torch.isfinite(loss):
            raise TrialFailed(f"non-finite training loss ({loss.item()})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        preempt.check()  # after a whole step: the state of the last finished epoch is on disk
        total += loss.item() * images.shape[0]
        count += images.shape[0]
    return total / max(count, 1)


@torch.no_grad()
def validate(adapter, learner, split: PreparedSplit, loss_fn, batch_size: int, device, amp: bool = True) -> tuple[float, float]:
    """Mean loss and mean per-image Dice at the cached resolution (used for model selection)."""
    learner.eval()
    losses, dices = [], []
    for batch in make_loader(split, batch_size, False, False, 0, 0):
        images, masks = batch["image"].to(device), batch["mask"].to(device)
        text = adapter.tokenize(list(batch["prompt"]), learner.text_ctx)
        with autocast_for(device, amp):
            logits = adapter(images, text, learner).float()
        losses.append(loss_fn(logits, masks).item() * images.shape[0])
        dice, _ = dice_iou(torch.sigmoid(logits) > 0.5, masks > 0.5)
        dices.append(dice.cpu())
    learner.train()
    n = sum(len(d) for d in dices)
    val_loss = sum(losses) / max(n, 1)
    if not math.isfinite(val_loss):
        raise TrialFailed(f"non-finite validation loss ({val_loss})")
    return val_loss, float(torch.cat(dices).mean()) if dices else float("nan")


@torch.no_grad()
def evaluate_test(adapter, learner, split: PreparedSplit, batch_size: int, device=None, amp: bool = True,
                  checkpoint: Path | None = None) -> list[dict]:
    """Per-image Dice and IoU at threshold 0.5 at each image's original mask size."""
    device = device or pick_device()
    if checkpoint is not None:
        load_trainable(learner, checkpoint)
    adapter.to(device)
    learner.to(device).eval()
    rows = []
    for batch in make_loader(split, batch_size, False, False, 0, 0):
        images = batch["image"].to(device)
        text = adapter.tokenize(list(batch["prompt"]), learner.text_ctx)
        with autocast_for(device, amp):
            logits = adapter(images, text, learner).float().cpu()
        for logit, index in zip(logits, batch["index"].tolist()):
            target = torch.from_numpy(np.asarray(split.original_mask(index)) > 0)
            pred = logits_to_mask(logit, tuple(target.shape))
            dice, iou = dice_iou(pred[None], target[None])
            rows.append(dict(id=split.ids[index], dice=float(dice), iou=float(iou)))
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
