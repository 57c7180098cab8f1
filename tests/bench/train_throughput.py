"""Training-step throughput per method on the demo stand-in, and the share of step time spent loading data.

Prints figures; asserts nothing. Run: .venv/bin/python tests/bench/train_throughput.py [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from tunevlseg.data.cache import PreparedSplit, SegmentationDataset
from tunevlseg.data.prepare import prepare_dataset
from tunevlseg.data.synthetic import write_synthetic
from tunevlseg.models.clipseg import CLIPSegAdapter
from tunevlseg.models.standin import build_standin, build_tokenizer
from tunevlseg.prompts import METHODS, build_learner
from tunevlseg.train.loop import freeze, make_loss, TrainSettings

REPO = Path(__file__).resolve().parents[2]


def time_steps(adapter, learner, loader, steps: int, model_step: bool) -> tuple[float, int]:
    """Seconds and images for ``steps`` batches; ``model_step=False`` only loads the data (no-op model)."""
    loss_fn = make_loss(TrainSettings())
    params = [p for p in learner.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3) if params else None
    seen, started, it = 0, time.perf_counter(), iter(loader)
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        if model_step:
            text = adapter.tokenize(list(batch["prompt"]), learner.text_ctx)
            loss = loss_fn(adapter(batch["image"], text, learner), batch["mask"])
            if opt:
                opt.zero_grad()
                loss.backward()
                opt.step()
        seen += batch["image"].shape[0]
    return time.perf_counter() - started, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())["models"]["clipseg"]["standin"]
    tokenizer = build_tokenizer(cfg["vocabulary"])
    adapter = CLIPSegAdapter(build_standin(cfg["arch"], tokenizer), tokenizer)
    freeze(adapter)
    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared = Path(tmp) / "raw", Path(tmp) / "prepared"
        write_synthetic("tissue", raw, n=400, image_size=cfg["arch"]["image_size"], seed=0)
        prepare_dataset(raw, prepared, size=cfg["arch"]["image_size"])
        split = PreparedSplit(prepared, "train")
        loader = DataLoader(SegmentationDataset(split, augment=True), batch_size=args.batch_size, shuffle=True)
        print(f"stand-in {cfg['arch']['image_size']} px, batch {args.batch_size}, {args.threads} threads, {args.steps} steps")
        print(f"{'method':<12}{'images/s':>10}{'data share':>12}")
        data_s, data_n = time_steps(adapter, build_learner("zeroshot", adapter.dims, 0), loader, args.steps, False)
        for method in METHODS:
            depth = 0 if method == "zeroshot" else 2
            learner = build_learner(method, adapter.dims, depth)
            time_steps(adapter, learner, loader, 2, True)  # warm-up
            seconds, images = time_steps(adapter, learner, loader, args.steps, True)
            share = (data_s / data_n) / (seconds / images)
            print(f"{method:<12}{images / seconds:>10.1f}{share:>11.1%}")


if __name__ == "__main__":
    main()
