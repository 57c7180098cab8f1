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
class ModelInfo:
    """``adapter``: ``module:Class`` of its ``PromptableModel``; ``modalities``: encoders that take prompts;
    ``default_options``: loading options a config may leave out (e.g. CRIS's backbone and tokenizer);
    ``standin``: the ``models.<name>.standin`` a config with ``weights: standin`` may leave out (then its
    ``image_size`` defaults to the stand-in's); ``image_size``: the public weights' input size a config may
    leave out (0: the config must give it)."""

    name: str
    title: str
    adapter: str
    modalities: tuple[str, ...]
    default_options: dict = field(default_factory=dict, hash=False)
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
        ModelInfo("clipseg", "CLIPSeg", "tunevlseg.models.clipseg:CLIPSegAdapter", ("text", "vision")),
        ModelInfo("cris", "CRIS", "tunevlseg.models.cris.adapter:CRISAdapter", ("text",),
                  {"backbone": "RN50", "image_size": 416, "tokenizer": "openai/clip-vit-base-patch32"}),
        ModelInfo("sam3", "SAM 3", "tunevlseg.models.sam3.adapter:Sam3Adapter", ("text",), standin=SAM3_STANDIN,
                  image_size=1008),
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


__all__ = ["REGISTRY", "ModelInfo", "adapter_class", "build_standin", "get_model", "load_adapter",
           "supported_methods", "supports"]
