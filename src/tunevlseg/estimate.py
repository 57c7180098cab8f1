"""What a configured grid costs: time a few steps of each (model, method) here, multiply by the grid.

``tunevlseg estimate --configfile workflow/presets/paper.yaml`` builds every configured model (its weights
when they load — hub or file — else a random model of the same architecture: the cost of a step does
not depend on the weights), times training steps, evaluation forwards and the frozen image encoder at
the configured image sizes on the current device, and prints a per-cell table and the total::

    total: N GPU-hours        (CPU-hours on a machine without CUDA)

Per tuned cell: ``n_trials`` × ``epochs`` × (⌈train / batch⌉ training steps + validation forwards)
+ test forwards per trial, plus ``tuning.final_seeds`` − 1 retrainings of the best configuration; a
cell on the frozen-feature cache (:mod:`tunevlseg.features`) trains on cached features (plus the live
encoding of the 36 % of samples augmentation changes, unless ``training.cache_views`` stores views),
and each cache is computed once (its own rows). Epochs are the maximum (early stopping and pruning
only shorten them): an upper bound.

Sample counts come from the prepared data when it exists (``results/prepared/<dataset>/<size>``),
else from ``--samples DATASET=TRAIN,VAL,TEST``, else from :data:`APPROX_SAMPLES` (approximate counts
of the releases, one sample per (image, class)), else ``n`` of a synthetic dataset.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .methods import METHODS, get_method

log = logging.getLogger(__name__)

#: Approximate (train, val, test) samples of the registry's datasets when nothing is prepared yet: the
#: release sizes with the registry's split rules, one sample per (image, class) for the multi-class ones
#: (CAMUS: 3 structures × 4 images per patient; VOC, Cityscapes: the classes present per image, estimated).
APPROX_SAMPLES = {
    "kvasir": (800, 100, 100), "clinicdb": (490, 61, 61), "bkai": (800, 100, 100), "isic2016": (810, 90, 379),
    "dfu2022": (1600, 200, 200), "busi": (624, 78, 78), "camus": (4800, 600, 600),
    "chexlocalize": (840, 280, 280), "voc2012": (1980, 220, 2200), "cityscapes": (35000, 3700, 6500),
}
SYNTHETIC_FRACTIONS = (0.8, 0.1, 0.1)
CLIP_VOCAB = 49408


# ------------------------------------------------------------------------------ models to time
def random_clipseg(image_size: int = 352):
    """A random ``CIDAS/clipseg-rd64-refined``: ViT-B/16 (12 layers, 768) + text 12 × 512, reduce_dim 64,
    extract layers [3, 6, 9], the refined (complex transposed convolution) decoder."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    from .models.clipseg import CLIPSegAdapter
    from .models.standin import build_tokenizer

    tokenizer = build_tokenizer(["polyp", "lesion"], max_length=77)
    config = CLIPSegConfig(
        text_config=dict(vocab_size=CLIP_VOCAB, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=16),
        projection_dim=512, reduce_dim=64, extract_layers=[3, 6, 9], decoder_num_attention_heads=4,
        decoder_intermediate_size=2048, conditional_layer=0, use_complex_transposed_convolution=True)
    torch.manual_seed(0)
    return CLIPSegAdapter(CLIPSegForImageSegmentation(config), tokenizer)


def random_cris(image_size: int = 416, backbone: str = "RN50"):
    """A random CRIS (RN50 or RN101 CLIP backbone) at ``image_size``."""
    from .models.cris import CRIS, CRISAdapter, CRISConfig
    from .models.standin import build_tokenizer

    torch.manual_seed(0)
    cfg = (CRISConfig.rn101 if backbone == "RN101" else CRISConfig.rn50)(image_size=image_size)
    return CRISAdapter(CRIS(cfg), build_tokenizer(["polyp", "lesion"], max_length=77), max_text_len=77)


def random_sam3(image_size: int = 1008):
    """A random ``facebook/sam3`` (the package's ``PUBLIC_ARCH``) at ``image_size`` (rounded down to a multiple of
    the 14 px patch)."""
    from .models.sam3 import PUBLIC_ARCH, Sam3Adapter, build_sam3
    from .models.standin import build_tokenizer

    size = max(14, image_size // 14 * 14)
    return Sam3Adapter(build_sam3({**PUBLIC_ARCH, "image_size": size}, seed=0),
                       build_tokenizer(["polyp", "lesion"], max_length=32), {"size": size})


#: A random model of each registered model's public architecture (used when weights are unavailable).
RANDOM_FULL_SIZE = {
    "clipseg": lambda options: random_clipseg(options.get("image_size", 352)),
    "cris": lambda options: random_cris(options.get("image_size", 416), options.get("backbone", "RN50")),
    "sam3": lambda options: random_sam3(options.get("image_size") or 1008),
}


def timing_adapter(model: str, weights: str, options: dict, standin: dict | None = None):
    """(frozen adapter, note): ``weights`` when they load, else a random model of the same architecture — the
    demo stand-in's (``standin``: the config's ``models.<m>.standin``) or the public one."""
    from .models.base import freeze
    from .models.registry import build_standin, get_model, load_adapter

    try:
        return load_adapter(model, weights, options), f"weights {weights}"
    except (FileNotFoundError, OSError, ValueError) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
    if standin is not None:
        from .models.standin import build_tokenizer

        tokenizer = build_tokenizer(standin.get("vocabulary", ["polyp"]),
                                    max_length=standin["arch"].get("max_text_length", 32))
        adapter, note = build_standin(model, standin["arch"], tokenizer), f"random {model} stand-in"
    else:
        adapter = RANDOM_FULL_SIZE[model]({**get_model(model).default_options, **options})
        note = f"random {model} of the public architecture"
    freeze(adapter)
    return adapter, f"{note} ({weights} unavailable: {why[:160]})"


def timing_learner(adapter, method: str, settings: dict | None = None):
    """The method's learner at the deepest searched depth, first choice of each categorical hyper-parameter."""
    from .prompts import build_learner, learner_class

    info = get_method(method)
    settings = settings or {}
    space, fixed = settings.get("search", info.search), settings.get("fixed", {})
    hparams = {}
    for name in info.hparams:
        if name in fixed:
            hparams[name] = fixed[name]
        elif name in space:
            spec = space[name]
            hparams[name] = spec["choices"][0] if spec["type"] == "categorical" else (
                (spec["low"] + spec["high"]) / 2 if spec["type"] == "float" else spec["low"])
    kwargs = {"model": adapter.model} if info.trains_model else {}
    depth = 0
    if info.searches_depth:
        depth = min(fixed.get("depth", space.get("depth", {}).get("high", 1)), learner_class(method).max_depth(adapter.dims))
    return build_learner(method, adapter.dims, depth=depth, **hparams, **kwargs)


# ------------------------------------------------------------------------------------- timing
@dataclass
class PairTiming:
    """Seconds of one (model, method) at ``batch`` images: training steps with and without the cache, and
    per image: evaluation forwards (with and without) and the frozen image encoder."""

    model: str
    method: str
    batch: int
    step_s: float
    cached_step_s: float | None = None
    eval_img_s: float = 0.0
    cached_eval_img_s: float | None = None
    encode_img_s: float | None = None
    # memory (MB): the model's weights, the learner's trainable parameters (a checkpoint), a training step's
    # peak beyond the loaded model — fixed part and per image (host RSS on a CPU, allocated memory on a GPU;
    # NaN where it cannot be measured) — and the frozen encoder's features of one image (float32)
    weights_mb: float = math.nan
    trainable_mb: float = math.nan
    step_fixed_mb: float = math.nan
    step_mb_per_image: float = math.nan
    features_mb_per_image: float = math.nan


class PeakMeter:
    """Peak memory of a block beyond what was in use at its start (MB): allocated CUDA memory on a GPU; on a
    Linux CPU the process's resident set (its high-water mark VmHWM, reset through ``/proc/self/clear_refs``
    after the freed heap went back to the system); NaN elsewhere."""

    def __init__(self, device: torch.device):
        self.device, self.base = device, None

    def __enter__(self) -> "PeakMeter":
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
            self.base = _status_mb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
        except (OSError, AttributeError, ValueError):
            self.base = None
        return self

    def __exit__(self, *exc) -> None:
        return None

    def peak_mb(self) -> float:
        if self.base is None:
            return math.nan
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        return _status_mb("VmHWM") - self.base


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"/proc/self/status has no {key}")


def step_memory(step_at, batch: int, device: torch.device) -> tuple[float, float]:
    """(fixed MB, MB per image) of a training step: its peak at ``batch`` and at 2 × ``batch`` images
    (``step_at(n)`` runs one step of n), after one step that allocated the optimiser's state."""
    peaks = []
    for n in (batch, 2 * batch):
        with PeakMeter(device) as meter:
            step_at(n)
        peaks.append(meter.peak_mb())
    per_image = max(0.0, (peaks[1] - peaks[0]) / batch)
    return max(0.0, peaks[0] - batch * per_image), per_image


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_rounds(fns: dict, steps: int, device: torch.device, warmup: int = 1) -> dict:
    """Median seconds of one call of each ``fns[name]()``, calling them in turn for ``warmup`` + ``steps``
    rounds: interleaved, the measurements of one round share the machine's load (ratios between them hold
    on a busy machine; the median resists spikes)."""
    times = {name: [] for name in fns}
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    for round_ in range(warmup + steps):
        for name, fn in fns.items():
            _sync(device)
            started = time.perf_counter()
            fn()
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def _mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def time_pair(adapter, method: str, size: int, batch: int, steps: int, device: torch.device, amp: bool = True,
              settings: dict | None = None, cached: bool | None = None, model: str = "",
              evaluation: bool = True, memory: bool = True) -> PairTiming:
    """Time ``method`` on ``adapter`` with random ``batch`` × 3 × ``size`` × ``size`` images on ``device``.

    ``cached`` (default: the method's image side is frozen) also times the step on precomputed features
    and the frozen encoder; ``evaluation=False`` skips the evaluation forwards; ``memory`` measures a
    training step's peak memory at ``batch`` and 2 × ``batch`` images (:func:`step_memory`).
    """
    from .train.loop import TrainSettings, _optimizer, autocast_for, make_loss, prepare_adapter

    info = get_method(method)
    cached = info.frozen_image_side and info.tuned if cached is None else cached
    if info.trains_model:  # its steps change the weights: time a copy, leave the caller's model as it was
        adapter = copy.deepcopy(adapter)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=gen).to(device)
    masks = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float().to(device)
    images_format = torch.contiguous_format
    if prepare_adapter(adapter, device):  # as the training loop does: channels_last for CNN encoders on CUDA
        images_format = torch.channels_last
        images = images.contiguous(memory_format=images_format)
    learner = timing_learner(adapter, method, settings).to(device)
    text = adapter.tokenize(["polyp."] * batch, learner.text_ctx)
    loss_fn = make_loss(TrainSettings())
    trainable = [p for p in learner.parameters() if p.requires_grad]
    optimizer = _optimizer(learner, TrainSettings()) if trainable else None

    def train_step(forward, target=masks):
        with autocast_for(device, amp):
            logits = forward()
        loss = loss_fn(logits.float(), target)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def evaluate(forward):
        with autocast_for(device, amp):
            forward()

    @torch.no_grad()
    def encode():
        with autocast_for(device, amp):
            return adapter.encode_image(adapter.normalize(images), None, pooled=True)

    full = lambda: adapter(images, text, learner)  # noqa: E731
    train_fns, eval_fns = {"step": lambda: train_step(full)}, {"eval": lambda: evaluate(full)}
    if cached:
        features = encode()
        float32_mb = sum(t.numel() for t in (*features.maps, features.pooled) if t is not None) * 4 / 2**20 / batch
        features = type(features)(tuple(t.float() for t in features.maps),
                                  features.pooled.float() if learner.uses_image_feature else None,
                                  features.input_size)
        frozen = lambda: adapter.forward_frozen(features, text, learner)  # noqa: E731
        train_fns.update(cached_step=lambda: train_step(frozen), encode=encode)
        eval_fns["cached_eval"] = lambda: evaluate(frozen)
    learner.train()
    t = _timed_rounds(train_fns, steps, device)
    learner.eval()
    e = _timed_rounds(eval_fns, steps, device) if evaluation else {}
    out = PairTiming(model or type(adapter).__name__, method, batch, t["step"],
                     eval_img_s=e.get("eval", math.nan) / batch)
    if cached:
        out.cached_step_s, out.encode_img_s = t["cached_step"], t["encode"] / batch
        out.cached_eval_img_s = e.get("cached_eval", math.nan) / batch
        out.features_mb_per_image = float32_mb
    out.weights_mb, out.trainable_mb = _mb(adapter.parameters()), _mb(trainable)
    if memory:
        def step_at(n):
            x = torch.rand(n, 3, size, size, generator=gen).to(device).contiguous(memory_format=images_format)
            y = (torch.rand(n, 1, size, size, generator=gen) > 0.5).float().to(device)
            words = adapter.tokenize(["polyp."] * n, learner.text_ctx)
            train_step(lambda: adapter(x, words, learner), y)

        learner.train()
        out.step_fixed_mb, out.step_mb_per_image = step_memory(step_at, batch, device)
    return out


# ---------------------------------------------------------------------------------- the grid
def sample_counts(config: dict, dataset: str, size: int, overrides: dict) -> tuple[tuple[int, int, int], int, str]:
    """((train, val, test) samples, distinct training images, source of the numbers)."""
    from .cells import Layout

    manifest = Path(Layout(config["results"]).prepared(dataset, size)) / "manifest.csv"
    if manifest.is_file():
        counts = {"train": 0, "val": 0, "test": 0}
        images = set()
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh):
                counts[row["split"]] += 1
                if row["split"] == "train":
                    images.add(row.get("content_hash") or row["id"])
        return (counts["train"], counts["val"], counts["test"]), len(images), "prepared"
    if dataset in overrides:
        counts = overrides[dataset]
        return counts, counts[0], "--samples"
    source = config["datasets"][dataset].get("source")
    if source in APPROX_SAMPLES:
        counts = APPROX_SAMPLES[source]
        return counts, counts[0], "approx."
    if source == "synthetic":
        n = config["datasets"][dataset]["synthetic"]["n"]
        counts = tuple(max(1, round(n * f)) for f in SYNTHETIC_FRACTIONS)
        return counts, counts[0], "approx. (synthetic n)"
    raise ValueError(f"estimate: no sample counts for dataset '{dataset}': prepare it or pass "
                     f"--samples {dataset}=TRAIN,VAL,TEST")


@dataclass
class CellCost:
    model: str
    method: str
    dataset: str
    samples: tuple[int, int, int]
    source: str
    step_s: float
    epochs: int
    trials: int
    seeds: int
    cached: bool
    hours: float


def cell_cost(t: PairTiming, training: dict, tuning: dict, samples: tuple[int, int, int], cached: bool,
              tuned: bool) -> tuple[float, float]:
    """(seconds of the cell, seconds of one training step at the configured batch)."""
    from .train.augment import Augment

    n_train, n_val, n_test = samples
    batch = training.get("batch_size", 32)
    scale = batch / t.batch
    if cached:
        live = 0.0 if training.get("cache_views", 0) or not training.get("augment", True) else Augment().p_changed
        step = t.cached_step_s * scale + live * batch * t.encode_img_s
        eval_img = t.cached_eval_img_s
    else:
        step, eval_img = t.step_s * scale, t.eval_img_s
    if not tuned:
        return (n_val + n_test) * eval_img, step
    epochs = training.get("epochs", 20)
    one_training = epochs * (math.ceil(n_train / batch) * step + n_val * eval_img) + n_test * eval_img
    runs = tuning.get("n_trials", 20) + max(0, tuning.get("final_seeds", 1) - 1)
    return runs * one_training, step


def load_config(*paths) -> dict:
    """The workflow config of one file or several (merged as ``snakemake --configfile A B`` merges them):
    :func:`tunevlseg.config.load_workflow_config`; a bad file is one line naming the file, key and problem."""
    from .config import load_workflow_config

    return load_workflow_config(paths[0] if len(paths) == 1 else list(paths))


def parse_samples(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, _, counts = item.partition("=")
        try:
            values = tuple(int(v) for v in counts.split(","))
        except ValueError:
            values = ()
        if not name or len(values) != 3:
            raise ValueError(f"--samples {item!r}: expected DATASET=TRAIN,VAL,TEST")
        out[name] = values
    return out


def cell_memory_mb(t: PairTiming, training: dict, trains_model: bool, cuda: bool) -> float:
    """Peak memory of a cell's job (MB) at the configured batch: the model (twice when every trial loads a fresh
    one: fine-tuning) + the step's fixed part + batch × its part per image; on a CPU also the runtime and the
    DataLoader workers (``tunevlseg.config``'s figures). On a GPU: the GPU's memory."""
    from .config import RUNTIME_MB, WORKER_MB

    batch, workers = training.get("batch_size", 32), training.get("num_workers", 0)
    need = t.weights_mb * (2 if trains_model else 1) + t.step_fixed_mb + batch * t.step_mb_per_image
    return need if cuda else need + RUNTIME_MB + (WORKER_MB * (2 * workers + 1) if workers else 0)


def cell_disk_mb(t: PairTiming, trains_model: bool, tuned: bool, tuning: dict) -> tuple[float, float]:
    """(MB a cell keeps, MB more while one of its trials runs). Every trial keeps its trainable parameters
    (``best.pt``: prompt tensors), except that a method training the whole model keeps the full checkpoints of
    the best trial and its seed replicates only (the other trials' are released). A running trial also holds
    its ``resume.pt`` (parameters and AdamW's two moments) and, when it trains the model, its ``best.pt``."""
    if not tuned:
        return 0.0, 0.0
    seeds = max(1, tuning.get("final_seeds", 1))
    runs = tuning.get("n_trials", 20) + seeds - 1
    kept = (seeds if trains_model else runs) * t.trainable_mb
    return kept, (4 if trains_model else 3) * t.trainable_mb


def _time_pairs(config: dict, grid, dev: torch.device, timing_batch: int, steps: int) -> tuple[dict, list[str]]:
    """{(model, method): PairTiming} of every pair of the grid, and a note per model on what was timed."""
    from .config import effective_settings, model_options, model_size, uses_feature_cache, weights_value

    timings, notes = {}, []
    for model in grid.models:
        standin = config["models"][model].get("standin") if config["models"][model]["weights"] == "standin" else None
        adapter, note = timing_adapter(model, weights_value(config, model), model_options(config, model), standin)
        notes.append(f"{model}: {note}")
        for m, method in grid.pairs():
            if m != model:
                continue
            started = time.perf_counter()
            settings = effective_settings(config, method)
            amp = settings["training"]["amp"]
            timings[(model, method)] = time_pair(adapter, method, model_size(config, model), timing_batch, steps, dev,
                                                 amp, settings, cached=uses_feature_cache(config, method), model=model)
            log.info("timed %s · %s in %.0f s", model, method, time.perf_counter() - started)
        del adapter
    return timings, notes


def _gb(mb: float) -> str:
    return "?" if math.isnan(mb) else f"{mb / 1024:.2f}"


def estimate_from_config(path: Path | list[Path], steps: int = 3, device: str | None = None, batch_size: int | None = None,
                         samples: list[str] | None = None, out=print) -> float:
    """Time, multiply, print the table (hours, peak memory and disk of each cell); returns the total hours."""
    from .config import global_training, make_grid, model_size, training_settings, uses_feature_cache
    from .train.loop import pick_device

    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    config = load_config(*paths)
    path = " + ".join(map(str, paths))
    overrides = parse_samples(samples or [])
    dev = pick_device(device or config.get("device", "auto"))
    unit = "GPU" if dev.type == "cuda" else "CPU"
    timing_batch = batch_size or (global_training(config)["batch_size"] if dev.type == "cuda" else 2)
    grid = make_grid(config)
    tuning = config.get("tuning", {})
    out(f"estimate of {path} on {dev} ({torch.get_num_threads()} threads), timing batch {timing_batch}, "
        f"{steps} steps per measurement; times scaled per image to the configured batch; peak GB: "
        f"{'GPU memory' if dev.type == 'cuda' else 'resident memory'} of one job at the configured batch")
    timings, notes = _time_pairs(config, grid, dev, timing_batch, steps)
    for note in notes:
        out(f"  {note}")
    header = (f"{'model':<8} {'method':<17} {'dataset':<13} {'train/val/test':>18} {'counts':<8} "
              f"{'s/step':>8} {'epochs':>6} {'runs':>5} {'cache':>5} {unit + '-h':>8} {'peak GB':>8} {'disk GB':>8}")
    out(header)
    out("-" * len(header))
    total, disk, running, feature_jobs = 0.0, 0.0, 0.0, {}
    for model, method, dataset in grid.cells():
        training, info, t = training_settings(config, method), METHODS[method], timings[(model, method)]
        counts, images, source = sample_counts(config, dataset, model_size(config, model), overrides)
        cached = uses_feature_cache(config, method)
        seconds, step = cell_cost(t, training, tuning, counts, cached, info.tuned)
        if cached:
            samples_cached = images * (1 + global_training(config)["cache_views"]) + counts[1] + counts[2]
            scale = 0.5 if global_training(config)["cache_dtype"] == "float16" else 1.0
            feature_jobs[(model, dataset)] = (samples_cached * t.encode_img_s,
                                              samples_cached * t.features_mb_per_image * scale)
        runs = tuning.get("n_trials", 20) + max(0, tuning.get("final_seeds", 1) - 1) if info.tuned else 0
        kept, in_flight = cell_disk_mb(t, info.trains_model, info.tuned, tuning)
        memory = cell_memory_mb(t, training, info.trains_model, dev.type == "cuda")
        total, disk, running = total + seconds / 3600, disk + kept, max(running, in_flight)
        out(f"{model:<8} {method:<17} {dataset:<13} {'/'.join(map(str, counts)):>18} {source:<8.8} {step:>8.2f} "
            f"{training.get('epochs', 20) if info.tuned else 0:>6} {runs:>5} {'yes' if cached else 'no':>5} "
            f"{seconds / 3600:>8.2f} {_gb(memory):>8} {_gb(kept):>8}")
    for (model, dataset), (seconds, mb) in feature_jobs.items():
        total, disk = total + seconds / 3600, disk + mb
        out(f"{model:<8} {'(features)':<17} {dataset:<13} {'':>18} {'':<8} {'':>8} {'':>6} {'':>5} {'':>5} "
            f"{seconds / 3600:>8.2f} {'':>8} {_gb(mb):>8}")
    out(f"disk: {_gb(disk)} GB kept (checkpoints, feature caches), up to {_gb(running)} GB more per training job "
        "running at once (its trial's resume.pt and best.pt)")
    out(f"total: {total:.1f} {unit}-hours")
    return total


__all__ = ["APPROX_SAMPLES", "PairTiming", "PeakMeter", "RANDOM_FULL_SIZE", "cell_cost", "cell_disk_mb", "cell_memory_mb",
           "estimate_from_config", "load_config", "random_clipseg", "random_cris", "random_sam3", "sample_counts",
           "step_memory", "time_pair", "timing_adapter", "timing_learner"]
