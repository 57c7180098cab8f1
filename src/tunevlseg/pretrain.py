"""Train the demo's stand-in for pretrained CLIPSeg or CRIS weights, and check that it is grounded.

A randomly initialised model trained for minutes learns to segment salient
objects and easily ignores its prompt (docs/explanation/demo-standins.md). The stand-in data are
therefore built so that only the prompt tells the target apart (two discs that
differ only in colour), and the run ends with a *grounding check*: validation
Dice with the right prompts versus with prompts shuffled between images.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data.atomic import atomic_dir
from .data.cache import PreparedSplit
from .jsonio import write_json
from .models.registry import build_standin
from .models.standin import build_tokenizer
from .train.loop import TrainSettings, make_loader, autocast_for, make_loss, pick_device
from .train.metrics import dice_iou

log = logging.getLogger(__name__)


def pretrain_standin(prepared_dir: Path, out_dir: Path, arch: dict, vocabulary: list[str], epochs: int = 40,
                     batch_size: int = 32, lr: float = 1e-3, seed: int = 0, device: str = "auto",
                     min_grounding_gap: float = 0.0, check_every: int = 5, model: str = "clipseg") -> dict:
    """Train a tiny ``model`` (clipseg or cris) end to end on ``prepared_dir``; save it to ``out_dir`` atomically.

    The folder is written in the model's public format (``save_pretrained`` for CLIPSeg, the
    community checkpoint layout for CRIS), so the benchmark loads it through the real loader.

    Returns the grounding report (also saved as ``grounding.json`` in ``out_dir``).
    Raises ``RuntimeError`` if the right-prompt Dice does not beat the shuffled-prompt
    Dice by ``min_grounding_gap``: such a stand-in would make every prompt method look alike.
    """
    torch.manual_seed(seed)
    random.seed(seed)
    dev = pick_device(device)
    train, val = PreparedSplit(prepared_dir, "train"), PreparedSplit(prepared_dir, "val")
    tokenizer = build_tokenizer(vocabulary, max_length=arch.get("max_text_length", 32))
    adapter = build_standin(model, arch, tokenizer).to(dev)
    settings = TrainSettings(lr=lr, batch_size=batch_size, epochs=epochs, seed=seed)
    loss_fn = make_loss(settings)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=1e-4)
    loader = make_loader(train, batch_size, True, False, seed, 0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, epochs * len(loader)))
    started = time.perf_counter()
    bar = tqdm(range(epochs), desc="pretrain stand-in")
    for epoch in bar:
        adapter.train()
        for batch in loader:
            images, masks = batch["image"].to(dev), batch["mask"].to(dev)
            with autocast_for(dev, True):
                logits = adapter(images, adapter.tokenize(list(batch["prompt"])))
            loss = loss_fn(logits.float(), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapter.parameters(), 1.0)  # from-scratch transformers diverge without it
            optimizer.step()
            scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if check_every and (epoch + 1) % check_every == 0 and epoch + 1 < epochs:
            adapter.eval()
            progress = grounding_check(adapter, val, batch_size, dev, seed)
            log.info("epoch %d: val Dice %.3f with the right prompt, %.3f with shuffled prompts", epoch + 1,
                     progress["val_dice_right_prompt"], progress["val_dice_shuffled_prompt"])
    adapter.eval()
    report = grounding_check(adapter, val, batch_size, dev, seed)
    report.update(epochs=epochs, seconds=round(time.perf_counter() - started, 1), n_train=len(train.ids))
    log.info("grounding: right prompt %.3f vs shuffled %.3f", report["val_dice_right_prompt"],
             report["val_dice_shuffled_prompt"])
    if report["grounding_gap"] < min_grounding_gap:
        raise RuntimeError(
            f"stand-in is not grounded: val Dice {report['val_dice_right_prompt']:.3f} with the right prompt vs "
            f"{report['val_dice_shuffled_prompt']:.3f} with shuffled prompts (gap < {min_grounding_gap}); "
            f"train longer (models.{model}.standin.epochs) or on more images")
    with atomic_dir(Path(out_dir)) as tmp:
        adapter.cpu().save(tmp)
        write_json(tmp / "grounding.json", report)
    return report


@torch.no_grad()
def grounding_check(adapter, split: PreparedSplit, batch_size: int, device, seed: int = 0) -> dict:
    """Mean validation Dice with each image's own prompt and with prompts shuffled between images."""
    prompts = list(split.prompts)
    shuffled = prompts[:]
    random.Random(seed).shuffle(shuffled)
    right, wrong = [], []
    for batch in make_loader(split, batch_size, False, False, 0, 0):
        images, masks = batch["image"].to(device), batch["mask"].to(device) > 0.5
        idx = batch["index"].tolist()
        for texts, out in (([prompts[i] for i in idx], right), ([shuffled[i] for i in idx], wrong)):
            logits = adapter(images, adapter.tokenize(texts))
            out.append(dice_iou(torch.sigmoid(logits) > 0.5, masks)[0].cpu())
    right_dice, wrong_dice = float(torch.cat(right).mean()), float(torch.cat(wrong).mean())
    return dict(val_dice_right_prompt=right_dice, val_dice_shuffled_prompt=wrong_dice,
                grounding_gap=right_dice - wrong_dice)
