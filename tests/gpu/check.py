"""The GPU check: every (model, method) at full size on a CUDA device — throughput, peak memory, the frozen-feature
cache's step ratio, and the device's logits against CPU float32.

Random full-size models (``tunevlseg.estimate``: CLIPSeg rd64-refined at 352, CRIS-R50 at 416): weights do
not change the cost, and no hub is needed. Per pair, ``--steps`` training steps (bf16 autocast on CUDA) give
img/s and the peak CUDA memory; methods whose image side is frozen also run the step on precomputed
features (the ``cached`` ratio). The logits of two fixed images are compared with those of the same model
in float32 on the CPU:

* float32 on the device (TF32 off): relative L2 error ≤ ``FP32_TOL`` (1e-4);
* bf16 autocast on the device: relative L2 error ≤ ``BF16_TOL`` (5e-2) and the thresholded masks agree on
  ≥ ``MASK_AGREEMENT`` (98 %) of the pixels (bf16 keeps 8 significand bits; 24 layers compound it).

Exits 1 when a check fails. Run by ``tests/gpu/check.sh`` (which installs the CUDA wheel first); in CI on
the CPU (``--device cpu --steps 2``) so that it keeps working. ``--tiny`` uses the demo-sized stand-in
architectures (the unit test: seconds).
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time

import torch

from tunevlseg.estimate import RANDOM_FULL_SIZE, time_pair, timing_learner
from tunevlseg.methods import METHODS
from tunevlseg.models.base import freeze
from tunevlseg.models.registry import REGISTRY, build_standin, get_model, supported_methods
from tunevlseg.train.loop import autocast_for, pick_device, prepare_adapter

FP32_TOL = 1e-4
BF16_TOL = 5e-2
MASK_AGREEMENT = 0.98
SIZES = {"clipseg": 352, "cris": 416, "sam3": 1008}
TINY = {"clipseg": dict(image_size=32, patch_size=8, vision_width=32, vision_layers=4, vision_heads=2, text_width=24,
                        text_layers=3, text_heads=2, projection_dim=16, reduce_dim=8, extract_layers=[0, 1, 2]),
        "cris": dict(image_size=32, layers=[1, 1, 1, 1], width=8, embed_dim=32, text_width=16, text_heads=2,
                     text_layers=3, fpn_out=[8, 16, 32], num_layers=1, num_head=2, dim_ffn=32),
        "sam3": dict(image_size=32, patch_size=4, vision_width=32, vision_layers=3, vision_heads=2, window_size=4,
                     global_attn_indexes=[2], text_width=24, text_layers=3, text_heads=2, hidden=32, detr_layers=1,
                     detr_heads=2, num_queries=8)}
TINY_HPARAMS = {"cocoop": {"hidden": {"type": "categorical", "choices": [8]}},
                "maple": {"coupling": {"type": "categorical", "choices": ["mlp8"]}},
                "shared_attention": {"heads": {"type": "categorical", "choices": [4]},
                                     "ffn": {"type": "categorical", "choices": [40]}}}


def build(model: str, tiny: bool):
    """(frozen random adapter, image size)."""
    torch.manual_seed(0)
    if tiny:
        from tunevlseg.models.standin import build_tokenizer

        adapter = build_standin(model, TINY[model], build_tokenizer(["polyp"], max_length=24))
        size = TINY[model]["image_size"]
    else:
        adapter = RANDOM_FULL_SIZE[model](dict(get_model(model).default_options, image_size=SIZES[model]))
        size = SIZES[model]
    freeze(adapter)
    return adapter, size


def settings_for(method: str, tiny: bool) -> dict | None:
    if not tiny or method not in TINY_HPARAMS:
        return None
    return {"search": {**METHODS[method].search, **TINY_HPARAMS[method]}}


@torch.no_grad()
def logits(adapter, method: str, images: torch.Tensor, device: torch.device, bf16: bool, settings) -> torch.Tensor:
    torch.manual_seed(1)  # the same learner initialisation on every copy
    learner = timing_learner(adapter, method, settings).to(device).eval()
    text = adapter.tokenize(["polyp."] * len(images), learner.text_ctx)
    images = images.to(device)
    if prepare_adapter(adapter, device):  # the training loop's memory format (CRIS on CUDA: channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast_for(device, bf16):
        out = adapter(images, text, learner).float().cpu()
    if METHODS[method].trains_model:
        freeze(adapter)
    return out


def compare(ref: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    """(relative L2 error, share of pixels whose mask (logit > 0) agrees)."""
    rel = float((out - ref).norm() / ref.norm().clamp_min(1e-12))
    return rel, float(((out > 0) == (ref > 0)).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=list(REGISTRY))
    parser.add_argument("--tiny", action="store_true", help="demo-sized architectures (CI of the script itself)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu to check the script itself", file=sys.stderr)
        return 2
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or "cpu"
    started = time.perf_counter()
    print(f"gpu check: {device} ({name}), torch {torch.__version__}, CUDA {torch.version.cuda}, batch "
          f"{args.batch_size}, {args.steps} steps, {'bf16 autocast' if cuda else 'float32'}"
          f"{', tiny models' if args.tiny else ', full size'}")
    print(f"{'model':<8} {'method':<17} {'img/s':>8} {'cached img/s':>12} {'ratio':>6} {'peak MiB':>9} "
          f"{'fp32 err':>9} {'bf16 err':>9} {'mask agr':>9}  check", flush=True)
    failures = []
    for model in args.models:
        cpu_adapter, size = build(model, args.tiny)
        dev_adapter = copy.deepcopy(cpu_adapter).to(device)
        images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
        for method in supported_methods(model):
            settings = settings_for(method, args.tiny)
            ref = logits(cpu_adapter, method, images, torch.device("cpu"), False, settings)
            rel32, _ = compare(ref, logits(dev_adapter, method, images, device, False, settings))
            rel16, agree = compare(ref, logits(dev_adapter, method, images, device, True, settings))
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            info = METHODS[method]
            cached = info.frozen_image_side and info.tuned
            t = time_pair(dev_adapter, method, size, args.batch_size, args.steps, device, cuda, settings,
                          cached=cached, model=model, evaluation=False)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")
            ok = rel32 <= FP32_TOL and (not cuda or (rel16 <= BF16_TOL and agree >= MASK_AGREEMENT))
            if not ok:
                failures.append(f"{model}·{method}")
            img_s = args.batch_size / t.step_s
            cached_img_s = args.batch_size / t.cached_step_s if cached else float("nan")
            ratio = t.step_s / t.cached_step_s if cached else float("nan")
            print(f"{model:<8} {method:<17} {img_s:>8.1f} {cached_img_s:>12.1f} {ratio:>6.2f} {peak:>9.0f} "
                  f"{rel32:>9.1e} {rel16:>9.1e} {agree:>9.2%}  {'ok' if ok else 'FAIL'}", flush=True)
        del cpu_adapter, dev_adapter
        if cuda:
            torch.cuda.empty_cache()
    print(f"tolerances: fp32 rel. L2 <= {FP32_TOL:g}; bf16 rel. L2 <= {BF16_TOL:g} and mask agreement >= "
          f"{MASK_AGREEMENT:.0%} (bf16 checked on CUDA only); {time.perf_counter() - started:.0f} s")
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
