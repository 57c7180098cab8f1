"""Training-step throughput per method, the share of step time spent loading data, and the peak
memory of a training step: on the demo stand-ins, or on CRIS-R50 at its paper size (416).

Prints figures; asserts nothing. Run:
    .venv/bin/python tests/bench/train_throughput.py [--steps 20]              # demo CLIPSeg
    .venv/bin/python tests/bench/train_throughput.py --model cris              # demo CRIS
    .venv/bin/python tests/bench/train_throughput.py --model cris --paper --batch-size 4 --steps 3
Each method runs in its own process so that its peak resident memory (CPU) or peak CUDA
allocation (GPU) is its own.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from tunevlseg.data.cache import PreparedSplit, SegmentationDataset
from tunevlseg.data.prepare import prepare_dataset
from tunevlseg.data.synthetic import write_synthetic
from tunevlseg.models.cris import CRIS, CRISAdapter, CRISConfig
from tunevlseg.models.registry import REGISTRY, build_standin, supported_methods
from tunevlseg.models.standin import build_tokenizer
from tunevlseg.prompts import build_learner
from tunevlseg.models.base import freeze
from tunevlseg.train.loop import make_loss, TrainSettings

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


def peak_memory_mb() -> float:
    """Peak CUDA allocation when on GPU, else this process's peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_adapter(model: str, paper: bool):
    """(frozen adapter, image size): the demo stand-in of ``model``, or CRIS-R50 at 416 (random weights)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())["models"][model]["standin"]
    if model == "cris" and paper:
        tokenizer = build_tokenizer(cfg["vocabulary"], max_length=77)
        adapter, size = CRISAdapter(CRIS(CRISConfig.rn50()), tokenizer), 416
    else:
        tokenizer = build_tokenizer(cfg["vocabulary"], max_length=cfg["arch"].get("max_text_length", 32))
        adapter, size = build_standin(model, cfg["arch"], tokenizer), cfg["arch"]["image_size"]
    freeze(adapter)
    return adapter, size


def run_one(method: str, args) -> None:
    """Time one method on a fresh synthetic cache and print one table row."""
    torch.set_num_threads(args.threads)
    adapter, size = build_adapter(args.model, args.paper)
    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared = Path(tmp) / "raw", Path(tmp) / "prepared"
        write_synthetic("tissue", raw, n=max(40, 4 * args.batch_size), image_size=size, seed=0)
        prepare_dataset(raw, prepared, size=size)
        loader = DataLoader(SegmentationDataset(PreparedSplit(prepared, "train"), augment=True),
                            batch_size=args.batch_size, shuffle=True)
        data_s, data_n = time_steps(adapter, build_learner("zeroshot", adapter.dims, 0), loader, args.steps, False)
        kwargs = {"model": adapter.model} if method == "finetune" else {}
        learner = build_learner(method, adapter.dims, 0 if method in ("zeroshot", "finetune") else 2, **kwargs)
        time_steps(adapter, learner, loader, 2, True)  # warm-up
        seconds, images = time_steps(adapter, learner, loader, args.steps, True)
    share = (data_s / data_n) / (seconds / images)
    n_params = sum(p.numel() for p in learner.parameters())
    print(f"{method:<18}{images / seconds:>10.1f}{share:>12.1%}{peak_memory_mb():>12.0f}{n_params:>12,}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--model", choices=sorted(REGISTRY), default="clipseg")
    parser.add_argument("--paper", action="store_true", help="CRIS-R50 at 416 instead of the demo stand-in")
    parser.add_argument("--only", help="run one method in this process (used internally)")
    args = parser.parse_args()
    if args.only:
        run_one(args.only, args)
        return
    what = "CRIS-R50 at 416" if args.paper and args.model == "cris" else f"demo {args.model} stand-in"
    print(f"{what}, batch {args.batch_size}, {args.threads} threads, {args.steps} steps (depth 2)")
    print(f"{'method':<18}{'images/s':>10}{'data share':>12}{'peak MB':>12}{'trainable':>12}", flush=True)
    for method in supported_methods(args.model):
        subprocess.run([sys.executable, __file__, "--only", method, "--steps", str(args.steps), "--model", args.model,
                        "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
                       + (["--paper"] if args.paper else []), check=True)


if __name__ == "__main__":
    main()
