"""SAM 3 for the benchmark: ``transformers``' ``Sam3Model`` from a hub name or a ``save_pretrained`` folder,
its preprocessing (``preprocessor_config.json``: mean, std, size), the demo stand-in and the public architecture.

``facebook/sam3`` is gated: accept the licence on its hub page and ``huggingface-cli login``, or download it
to a local folder and point ``models.sam3.weights`` at that folder (README "Model weights").

The processor's preprocessing is read from ``preprocessor_config.json`` rather than by instantiating
``Sam3ImageProcessor`` (a torchvision backend the benchmark does not need: images arrive resized by the
data preparation, in [0, 1]); only its ``image_mean``, ``image_std`` and ``size`` matter here.
"""

from __future__ import annotations

import json
from pathlib import Path

HUB_NAME = "facebook/sam3"
PREPROCESSOR_FILE = "preprocessor_config.json"
#: ``Sam3ImageProcessor``'s defaults (IMAGENET_STANDARD mean/std, 1008 × 1008).
PROCESSOR_DEFAULTS = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": 1008}
WHERE_TO_GET = (f"{HUB_NAME} is gated: accept its licence on the hub page and run `huggingface-cli login`, or "
                "download it to a local folder and point models.sam3.weights at it (README 'Model weights')")


def read_preprocessing(name_or_dir: str) -> dict:
    """``{"image_mean", "image_std", "size"}`` of the processor saved with the weights (its defaults if none)."""
    out = dict(PROCESSOR_DEFAULTS)
    path = Path(name_or_dir) / PREPROCESSOR_FILE
    if not path.is_file():
        try:
            from transformers.utils import cached_file

            path = cached_file(name_or_dir, PREPROCESSOR_FILE, _raise_exceptions_for_missing_entries=False)
        except OSError:
            path = None
    if path:
        data = json.loads(Path(path).read_text())
        size = data.get("size") or {}
        out.update(image_mean=data.get("image_mean", out["image_mean"]), image_std=data.get("image_std", out["image_std"]),
                   size=size.get("height", out["size"]) if isinstance(size, dict) else int(size))
    return out


def detector_config(name_or_dir: str, image_size: int | None = None):
    """The ``Sam3Config`` of ``name_or_dir`` (a ``sam3_video`` config's detector part), resized to ``image_size``.

    The ViT's global-attention layers precompute rotary positions for the configured grid, so the input
    size is a config field (a multiple of the patch size), not only a preprocessing choice.
    """
    from transformers import AutoConfig, Sam3Config

    try:
        config = AutoConfig.from_pretrained(name_or_dir)
    except OSError as err:
        raise FileNotFoundError(f"cannot load SAM 3 from '{name_or_dir}': not a model folder and not in the Hugging "
                                f"Face cache (offline?). {WHERE_TO_GET}. ({str(err).splitlines()[0]})") from err
    detector = getattr(config, "detector_config", None) or config
    if isinstance(detector, dict):
        detector = Sam3Config(**detector)
    if image_size is not None:
        patch = detector.vision_config.backbone_config.patch_size
        if image_size % patch:
            raise ValueError(f"models.sam3.image_size: {image_size} is not a multiple of the patch size {patch}")
        detector.image_size = image_size
    return detector


def load_sam3(name_or_dir: str, image_size: int | None = None):
    """(``Sam3Model`` in eval mode, tokenizer, preprocessing) from a hub name or a local folder.

    ``image_size`` (None: the processor's size) sets the input size. ``FileNotFoundError`` names the
    weights and how to get access when neither a folder nor the hub provides them.
    """
    from transformers import AutoTokenizer, Sam3Model

    preprocessing = read_preprocessing(name_or_dir)
    size = image_size or preprocessing["size"]
    config = detector_config(name_or_dir, size)
    try:
        model = Sam3Model.from_pretrained(name_or_dir, config=config, attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(name_or_dir)
    except OSError as err:
        raise FileNotFoundError(f"cannot load SAM 3 weights from '{name_or_dir}'. {WHERE_TO_GET}. "
                                f"({str(err).splitlines()[0]})") from err
    return model.eval(), tokenizer, {**preprocessing, "size": size}


def sam3_config(arch: dict, tokenizer=None):
    """A ``Sam3Config`` from ``arch``: ``image_size``, ``patch_size``, ``vision_width``, ``vision_layers``,
    ``vision_heads``, ``window_size``, ``global_attn_indexes``, ``text_width``, ``text_layers``, ``text_heads``,
    ``hidden`` (the DETR/mask decoder width), ``detr_layers``, ``detr_heads``, ``num_queries``, optional
    ``pretrain_image_size``, ``vision_mlp``, ``text_mlp``, ``detr_mlp``, ``max_text_length``. With ``tokenizer``
    its vocabulary and special tokens size the text encoder (the stand-in); without, CLIP's 49,408 tokens."""
    from transformers import Sam3Config
    from transformers.models.sam3.configuration_sam3 import Sam3ViTConfig, Sam3VisionConfig

    known = {"image_size", "patch_size", "vision_width", "vision_layers", "vision_heads", "window_size",
             "global_attn_indexes", "text_width", "text_layers", "text_heads", "hidden", "detr_layers", "detr_heads",
             "num_queries", "pretrain_image_size", "vision_mlp", "text_mlp", "detr_mlp", "max_text_length"}
    unknown = set(arch) - known
    if unknown:
        raise ValueError(f"models.sam3.standin.arch: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    width, hidden = arch["vision_width"], arch["hidden"]
    vit = Sam3ViTConfig(hidden_size=width, intermediate_size=arch.get("vision_mlp", 4 * width),
                        num_hidden_layers=arch["vision_layers"], num_attention_heads=arch["vision_heads"],
                        image_size=arch["image_size"], patch_size=arch["patch_size"], window_size=arch["window_size"],
                        global_attn_indexes=list(arch["global_attn_indexes"]),
                        pretrain_image_size=arch.get("pretrain_image_size", arch["image_size"]))
    text = dict(hidden_size=arch["text_width"], intermediate_size=arch.get("text_mlp", 4 * arch["text_width"]),
                num_hidden_layers=arch["text_layers"], num_attention_heads=arch["text_heads"],
                max_position_embeddings=arch.get("max_text_length", 32), projection_dim=512, hidden_act="gelu")
    if tokenizer is not None:
        text.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, projection_dim=hidden)
    block = dict(hidden_size=hidden, num_attention_heads=arch["detr_heads"],
                 intermediate_size=arch.get("detr_mlp", 8 * hidden))
    return Sam3Config(
        vision_config=Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=hidden), text_config=text,
        geometry_encoder_config={**block, "num_layers": 1 if tokenizer is not None else 3},
        detr_encoder_config={**block, "num_layers": arch["detr_layers"]},
        detr_decoder_config={**block, "num_layers": arch["detr_layers"], "num_queries": arch["num_queries"]},
        mask_decoder_config=dict(hidden_size=hidden, num_attention_heads=arch["detr_heads"]))


#: ``facebook/sam3``'s architecture in :func:`sam3_config`'s terms (the ``Sam3Config`` defaults: ViT-L-like
#: 32 × 1024 with 24 × 24 windows and global attention at layers 7, 15, 23, 31; CLIP text 24 × 1024; DETR
#: encoder and decoder 6 × 256 with 200 queries).
PUBLIC_ARCH = dict(image_size=1008, patch_size=14, vision_width=1024, vision_layers=32, vision_heads=16,
                   vision_mlp=4736, window_size=24, global_attn_indexes=[7, 15, 23, 31], pretrain_image_size=336,
                   text_width=1024, text_layers=24, text_heads=16, hidden=256, detr_layers=6, detr_heads=8,
                   detr_mlp=2048, num_queries=200, max_text_length=32)


def build_sam3(arch: dict, tokenizer=None, seed: int | None = None):
    """A random-initialised ``Sam3Model`` of ``arch`` (see :func:`sam3_config`)."""
    import torch
    from transformers import Sam3Model

    if seed is not None:
        torch.manual_seed(seed)
    config = sam3_config(arch, tokenizer)
    config._attn_implementation = "sdpa"
    return Sam3Model(config)


def save_sam3_folder(model, tokenizer, out_dir, preprocessing: dict) -> None:
    """``save_pretrained`` model and tokenizer plus a ``preprocessor_config.json`` with ``preprocessing``."""
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    size = int(preprocessing["size"])
    (out / PREPROCESSOR_FILE).write_text(json.dumps({
        "image_processor_type": "Sam3ImageProcessor", "image_mean": list(preprocessing["image_mean"]),
        "image_std": list(preprocessing["image_std"]), "size": {"height": size, "width": size},
        "do_resize": True, "do_rescale": True, "do_normalize": True, "rescale_factor": 1 / 255}, indent=1))
