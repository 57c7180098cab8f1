"""The data share of a training step: the data path alone (no-op model) against the cheapest real step.

For each model at its paper size (CLIPSeg 352, CRIS-R50 416; random weights) on a synthetic prepared
set: seconds per batch of the training data path with a no-op model — memory-map reads, uint8
collation, (pinning and) transfer, conversion and batched augmentation on the device, and with the
feature cache the cached features' reads — with ``--workers`` DataLoader workers; then the seconds of
the cheapest real step of that model at the same batch (CoOp on cached features: the step for which the
data path weighs most). The share printed is data / (data + step): what the step would lose if none of
the data path overlapped with compute. Prints figures, asserts nothing; the target is ≤ 5 %.

    .venv/bin/python tests/bench/data_path.py [--batch-size 8] [--workers 0 2] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tunevlseg.data.cache import PreparedSplit
from tunevlseg.data.prepare import prepare_dataset
from tunevlseg.data.synthetic import write_synthetic
from tunevlseg.estimate import random_clipseg, random_cris, time_pair
from tunevlseg.features import FeatureCache, build_features
from tunevlseg.models.base import freeze
from tunevlseg.train.augment import Augment
from tunevlseg.train.batches import Batches
from tunevlseg.train.loop import pick_device

MODELS = {"clipseg": (random_clipseg, 352), "cris": (random_cris, 416)}


def data_seconds(split, features, batch: int, workers: int, device, epochs: int) -> float:
    """Median seconds per batch of iterating the training data path (the model does nothing)."""
    batches = Batches(split, batch, device, shuffle=True, seed=0, augment=Augment(0), features=features,
                      workers=workers)
    times = []
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        started = time.perf_counter()
        for out in batches:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
            started = time.perf_counter()
            del out
    return statistics.median(times[1:] if len(times) > 1 else times)  # the first waits for worker start-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--steps", type=int, default=3, help="timed real steps (median)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the data path timed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    b = args.batch_size
    print(f"data path: {device}, {torch.get_num_threads()} threads, batch {b}")
    print(f"{'model':<8} {'path':<16} {'workers':>7} {'data s/batch':>13} {'step s':>8} {'data share':>11}",
          flush=True)
    for model in args.models:
        build, size = MODELS[model]
        adapter = build(size)
        freeze(adapter)
        with tempfile.TemporaryDirectory() as tmp:
            raw, prepared = Path(tmp) / "raw", Path(tmp) / "prepared"
            write_synthetic("tissue", raw, n=6 * b, image_size=size, seed=0)
            prepare_dataset(raw, prepared, size=size)
            build_features(adapter, prepared, Path(tmp) / "features", model=model, weights="random",
                           dtype="float16", batch_size=b, device=device, amp=device.type == "cuda")
            features = FeatureCache(Path(tmp) / "features").split("train")
            split = PreparedSplit(prepared, "train")
            t = time_pair(adapter, "coop", size, b, args.steps, device, device.type == "cuda", cached=True,
                          model=model, evaluation=False)
            for path, feats, step in (("images", None, t.step_s), ("cached features", features, t.cached_step_s)):
                for workers in args.workers:
                    data = data_seconds(split, feats, b, workers, device, args.epochs)
                    print(f"{model:<8} {path:<16} {workers:>7} {data:>13.4f} {step:>8.3f} "
                          f"{data / (data + step):>11.1%}", flush=True)
        del adapter


if __name__ == "__main__":
    main()
