"""The model registry: one record per model, plain data (no torch import).

The Snakefile reads it at start to plan the grid: a model runs a method when the method's prompt
modalities are among the model's (CRIS's ResNet image encoder has no tokens a vision prompt could
join). Everything model-specific — loading weights, building and saving the demo stand-in, the
prompt-aware forward — is behind the adapter class the record names, which implements
:class:`tunevlseg.models.base.PromptableModel`.

Adding a model: a package (or module) with a ``PromptableModel`` subclass and one record here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..methods import METHODS, get_method


@dataclass(frozen=True)
class MemoryFigures:
    """Host memory (MB) of the model's jobs on the CPU, measured with its public architecture (random weights)
    at ``size`` px, one torch thread, the process's peak RSS (VmHWM) around two training steps at two batch
    sizes (README "Resources"). ``tunevlseg.config.job_mem_mb`` turns them into a job's ``mem_mb``.

    ``weights_mb``: the fp32 weights (``standin_weights_mb``: the demo's stand-in, config.yaml's ``arch``).
    A training step beyond the loaded model takes a fixed part (``*_step_mb``: the learner, gradients and
    AdamW state) and a part per image at ``size`` (``*_mb_per_image``): ``text_*`` for methods prompting only
    the text side (backward through the text encoder and decoder), ``vision_*`` for methods prompting the
    image encoder (the largest measured), ``train_*`` for a method that trains the whole model (fine-tuning:
    every weight's gradient and AdamW state, and the trial's fresh copy of the model).
    ``encode_mb_per_image``: the frozen image encoder without gradients (feature caches, evaluation)."""

    size: int
    weights_mb: float
    standin_weights_mb: float
    text_step_mb: float
    text_mb_per_image: float
    vision_step_mb: float
    vision_mb_per_image: float
    train_step_mb: float
    train_mb_per_image: float
    encode_mb_per_image: float


@dataclass(frozen=True)
class ModelInfo:
    """``adapter``: ``module:Class`` of its ``PromptableModel``; ``modalities``: encoders that take prompts;
    ``default_options``: loading options a config may leave out (e.g. CRIS's backbone and tokenizer);
    ``memory``: its measured memory figures (the ``mem_mb`` its jobs declare);
    ``standin``: the ``models.<name>.standin`` a config with ``weights: standin`` may leave out (then its
    ``image_size`` defaults to the stand-in's); ``image_size``: the public weights' input size a config may
    leave out (0: the config must give it)."""

    name: str
    title: str
    adapter: str
    modalities: tuple[str, ...]
    default_options: dict = field(default_factory=dict, hash=False)
    memory: MemoryFigures | None = None
    standin: dict = field(default_factory=dict, hash=False)
    image_size: int = 0


#: SAM 3's demo stand-in: a 4-layer ViT (patch 8, 4 × 4 windows, global attention in the last layer), CLIP text
#: 2 × 64, DETR encoder/decoder 1 × 64 with 16 queries; pretrained on the demo's ``shapes`` like the other two.
SAM3_STANDIN = dict(
    dataset="shapes", epochs=8, batch_size=32, lr=0.001, min_grounding_gap=0.2,
    vocabulary=["red", "green", "blue", "white", "disc", "polyp", "left", "ventricle", "lesion"],
    arch=dict(image_size=64, patch_size=8, vision_width=64, vision_layers=4, vision_heads=4, window_size=4,
              global_attn_indexes=[3], text_width=64, text_layers=2, text_heads=4, hidden=64, detr_layers=1,
              detr_heads=4, num_queries=16),
)

REGISTRY: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        # measured at 352 px: CoOp 111, VPT 330, MaPLe 343, Shared Attention 347 MB per image; Shared
        # Attention's learner (depth 11) 1.5 GB with its AdamW state, CoOp's under 50 MB. Fine-tuning not measured here (over
        # this machine's per-process budget): 4 × weights + VPT's per-image figure with the text side's
        # activations, an estimate
        ModelInfo("clipseg", "CLIPSeg", "tunevlseg.models.clipseg:CLIPSegAdapter", ("text", "vision"),
                  memory=MemoryFigures(size=352, weights_mb=575, standin_weights_mb=3, text_step_mb=50,
                                       text_mb_per_image=111, vision_step_mb=1530, vision_mb_per_image=350,
                                       train_step_mb=2700, train_mb_per_image=400, encode_mb_per_image=52)),
        # measured at 208 px (CoOp: 68 MB per image) and 160 px (fine-tuning: 94 MB per image, 2.6 GB fixed),
        # scaled to 416 px by pixels: 272 and 635 MB per image; no vision prompts (the text figures)
        ModelInfo("cris", "CRIS", "tunevlseg.models.cris.adapter:CRISAdapter", ("text",),
                  {"backbone": "RN50", "image_size": 416, "tokenizer": "openai/clip-vit-base-patch32"},
                  memory=MemoryFigures(size=416, weights_mb=560, standin_weights_mb=9, text_step_mb=160,
                                       text_mb_per_image=272, vision_step_mb=160, vision_mb_per_image=272,
                                       train_step_mb=2630, train_mb_per_image=635, encode_mb_per_image=56)),
        # SAM 3 (840 M parameters, 1008 px): ESTIMATES from the architecture, not yet measured (a full-size step
        # needs more than this machine lends one process): weights fp32; text methods backpropagate through the
        # CLIP text encoder and the detector/segmentation heads over 72 × 72 image tokens; fine-tuning keeps
        # gradients, AdamW's two moments and a fresh copy (4 × weights) plus the ViT's activations per image
        ModelInfo("sam3", "SAM 3", "tunevlseg.models.sam3.adapter:Sam3Adapter", ("text",), standin=SAM3_STANDIN,
                  image_size=1008,
                  memory=MemoryFigures(size=1008, weights_mb=3206, standin_weights_mb=5, text_step_mb=600,
                                       text_mb_per_image=1500, vision_step_mb=600, vision_mb_per_image=1500,
                                       train_step_mb=12800, train_mb_per_image=7000, encode_mb_per_image=400)),
    )
}


def get_model(name: str) -> ModelInfo:
    """The record of ``name``; ``KeyError`` listing the known models otherwise."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model '{name}'; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def supports(model: str, method: str) -> bool:
    """True when ``method`` can run on ``model`` (its prompt modalities are among the model's)."""
    return set(get_method(method).modalities) <= set(get_model(model).modalities)


def supported_methods(model: str) -> tuple[str, ...]:
    """The methods ``model`` can run, in catalogue order."""
    return tuple(m for m in METHODS if supports(model, m))


def adapter_class(model: str):
    """The ``PromptableModel`` subclass of ``model`` (imports torch and the model's code)."""
    module, _, name = get_model(model).adapter.partition(":")
    return getattr(importlib.import_module(module), name)


def load_adapter(model: str, weights: str, options: dict | None = None):
    """The frozen prompt-aware adapter of ``model`` with ``weights`` (hub name, folder or checkpoint file).

    ``options`` are the model's config keys besides ``weights`` (e.g. CRIS's ``backbone``,
    ``tokenizer``, ``image_size``, ``max_text_len``), over the registry's defaults.
    """
    from .base import freeze

    adapter = adapter_class(model).load(weights, {**get_model(model).default_options, **(options or {})})
    freeze(adapter)
    return adapter


def build_standin(model: str, arch: dict, tokenizer):
    """A random-initialised trainable adapter of ``model`` sized by ``arch`` (the demo's pretraining)."""
    return adapter_class(model).build_standin(arch, tokenizer)


__all__ = ["REGISTRY", "MemoryFigures", "ModelInfo", "adapter_class", "build_standin", "get_model", "load_adapter",
           "supported_methods", "supports"]
