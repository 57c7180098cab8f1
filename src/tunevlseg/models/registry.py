"""The benchmark's models: which prompt methods each supports, and how each is loaded.

``MODEL_METHODS`` is plain data (no torch import) so that the Snakefile can plan the
grid at start; a unit test checks it against the learners' modalities.
"""

from __future__ import annotations

ALL_METHODS = ("zeroshot", "finetune", "coop", "cocoop", "vpt", "maple", "shared_attention", "shared_separate")
TEXT_ONLY_METHODS = ("zeroshot", "finetune", "coop", "cocoop")

# CRIS's ResNet image encoder has no tokens a vision prompt could join.
MODEL_METHODS: dict[str, tuple[str, ...]] = {
    "clipseg": ALL_METHODS,
    "cris": TEXT_ONLY_METHODS,
}


def supports(model: str, method: str) -> bool:
    """True when ``method`` can run on ``model`` (e.g. VPT needs vision tokens, which CRIS lacks)."""
    if model not in MODEL_METHODS:
        raise KeyError(f"unknown model '{model}'; known: {', '.join(sorted(MODEL_METHODS))}")
    return method in MODEL_METHODS[model]


def load_adapter(model: str, weights: str, options: dict | None = None):
    """The frozen prompt-aware adapter of ``model`` with ``weights`` (hub name, folder or checkpoint file).

    ``options`` are the model's config keys besides ``weights`` (e.g. CRIS's ``backbone``,
    ``tokenizer``, ``image_size``, ``max_text_len``).
    """
    from ..train.loop import freeze

    options = dict(options or {})
    if model == "clipseg":
        from .clipseg import CLIPSegAdapter, load_clipseg

        net, tokenizer = load_clipseg(weights)
        adapter = CLIPSegAdapter(net, tokenizer)
    elif model == "cris":
        from .cris.loading import load_cris
        from .cris import CRISAdapter

        net, tokenizer = load_cris(weights, backbone=options.get("backbone", "RN50"),
                                   image_size=options.get("image_size", 416),
                                   tokenizer=options.get("tokenizer", "openai/clip-vit-base-patch32"))
        adapter = CRISAdapter(net, tokenizer, max_text_len=options.get("max_text_len"))
    else:
        raise KeyError(f"unknown model '{model}'; known: {', '.join(sorted(MODEL_METHODS))}")
    freeze(adapter)
    return adapter


def build_standin(model: str, arch: dict, tokenizer):
    """A random-initialised trainable adapter of ``model`` sized by ``arch`` (the demo's pretraining)."""
    if model == "clipseg":
        from .clipseg import CLIPSegAdapter
        from .standin import build_standin as build_clipseg

        return CLIPSegAdapter(build_clipseg(arch, tokenizer), tokenizer)
    if model == "cris":
        from .cris import CRISAdapter
        from .cris.loading import build_cris_standin

        return CRISAdapter(build_cris_standin(arch, tokenizer), tokenizer, frozen_norm=False)
    raise KeyError(f"unknown model '{model}'; known: {', '.join(sorted(MODEL_METHODS))}")


def save_standin(model: str, adapter, out_dir) -> None:
    """Save a pretrained stand-in so that ``load_adapter(model, out_dir)`` reads it back."""
    if model == "clipseg":
        from .standin import save_standin as save_clipseg

        save_clipseg(adapter.model, adapter.tokenizer, out_dir)
    elif model == "cris":
        from .cris.loading import save_cris_folder

        save_cris_folder(adapter.model, adapter.tokenizer, out_dir)
    else:
        raise KeyError(f"unknown model '{model}'; known: {', '.join(sorted(MODEL_METHODS))}")
