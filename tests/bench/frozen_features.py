"""Training-step time on the frozen-feature cache vs encoding every image, at full size, for CoOp and CoCoOp.

Random CLIPSeg with the rd64-refined architecture at 352 px (ViT-B/16, 12 + 12 layers, reduce_dim 64,
extract layers [3, 6, 9], refined decoder) and random CRIS-R50 at 416 (``tunevlseg.estimate``), all
measured in one run (ratios are robust to a shared machine; absolute times are not). Prints figures,
asserts nothing. Columns:

* ``uncached``: the step as without the cache (frozen encoder + text encoder + decoder, backward);
* ``cached``: the step on stored features (``training.cache_views`` > 0, or no augmentation);
* ``+live``: the expected step with ``cache_views: 0`` (the paper preset): cached, plus the live
  encoding of the 36 % of samples the augmentation changes.

The last line is ``speedup coop X.XX cocoop Y.YY``: uncached / cached, the smaller over the two models.

    .venv/bin/python tests/bench/frozen_features.py [--quick] [--batch-size 2] [--steps 5] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from tunevlseg.estimate import random_clipseg, random_cris, time_pair
from tunevlseg.models.base import freeze
from tunevlseg.train.augment import Augment
from tunevlseg.train.loop import pick_device

MODELS = {"clipseg": (random_clipseg, 352), "cris": (random_cris, 416)}
METHODS = ("coop", "cocoop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 timed steps per measurement")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 on CUDA, 2 on a CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 2 if args.quick else args.steps
    batch = args.batch_size or (32 if device.type == "cuda" else 2)
    amp = device.type == "cuda"
    print(f"frozen features: {device}, {torch.get_num_threads()} threads, batch {batch}, median of {steps} steps"
          f"{', bf16 autocast' if amp else ', float32'}")
    print(f"{'model':<8} {'method':<7} {'uncached s':>11} {'cached s':>9} {'+live s':>8} {'speedup':>8} "
          f"{'+live':>6}", flush=True)
    p_live = Augment().p_changed
    speedups: dict[str, list[float]] = {m: [] for m in METHODS}
    for model, (build, size) in MODELS.items():
        adapter = build(size)
        freeze(adapter)
        for method in METHODS:
            t = time_pair(adapter, method, size, batch, steps, device, amp, cached=True, model=model, evaluation=False)
            live = t.cached_step_s + p_live * batch * t.encode_img_s
            speedup = t.step_s / t.cached_step_s
            speedups[method].append(speedup)
            print(f"{model:<8} {method:<7} {t.step_s:>11.3f} {t.cached_step_s:>9.3f} {live:>8.3f} {speedup:>8.2f} "
                  f"{t.step_s / live:>6.2f}", flush=True)
        del adapter
    print(f"speedup coop {min(speedups['coop']):.2f} cocoop {min(speedups['cocoop']):.2f}")


if __name__ == "__main__":
    main()
