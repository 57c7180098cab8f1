"""CRIS for the benchmark: a model folder (the demo stand-in) or a checkpoint file, plus a tokenizer.

A model folder holds ``cris_config.json`` (the ``CRISConfig`` fields), ``cris.pth`` in the
community checkpoint's key layout (DataParallel: ``{"state_dict": {"module.…"}}``) and the
tokenizer files, so the stand-in goes through the same strict loader as a real checkpoint.
A checkpoint *file* is read with the architecture named by ``backbone`` at ``image_size``
and the CLIP BPE tokenizer from ``tokenizer`` (hub name or local folder).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .model import CRIS, CRISConfig, load_cris_checkpoint

CONFIG_FILE = "cris_config.json"
CHECKPOINT_FILE = "cris.pth"
BACKBONES = {"RN50": CRISConfig.rn50, "RN101": CRISConfig.rn101}
WHERE_TO_GET = ("CRIS has no official weights release; the paper used the community RefCOCO R50 "
                "checkpoint (see docs/how-to/model-weights.md)")


def _load_tokenizer(name_or_dir: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_dir)
    except OSError as err:
        raise FileNotFoundError(
            f"cannot load the CRIS tokenizer '{name_or_dir}': not a tokenizer folder and not in the Hugging Face "
            f"cache (offline?). Point models.cris.tokenizer at a folder holding CLIP's BPE tokenizer files "
            f"(e.g. a saved openai/clip-vit-base-patch32). ({err})") from err


def load_cris(weights: str, backbone: str = "RN50", image_size: int = 416,
              tokenizer: str = "openai/clip-vit-base-patch32") -> tuple[CRIS, object]:
    """Load (model in eval mode, tokenizer) from a CRIS model folder or a checkpoint file.

    Raises ``FileNotFoundError`` naming ``weights`` when it does not exist, ``ValueError``
    listing missing and unexpected keys when the checkpoint does not match the architecture.
    """
    path = Path(weights)
    if path.is_dir():
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{path} is not a CRIS model folder: {CONFIG_FILE} is missing")
        fields = json.loads(config_path.read_text())
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        cfg = CRISConfig(**fields)
        checkpoint = path / CHECKPOINT_FILE
        tok = _load_tokenizer(str(path))
    elif path.is_file():
        if backbone not in BACKBONES:
            raise ValueError(f"models.cris.backbone: unknown '{backbone}'; known: {', '.join(BACKBONES)}")
        cfg = BACKBONES[backbone](image_size=image_size)
        checkpoint = path
        tok = _load_tokenizer(tokenizer)
    else:
        raise FileNotFoundError(f"CRIS weights not found: {weights} ({WHERE_TO_GET})")
    model = CRIS(cfg)
    load_cris_checkpoint(model, checkpoint)
    return model.eval(), tok


def build_cris_standin(arch: dict, tokenizer) -> CRIS:
    """A random-initialised small CRIS (``arch`` = ``CRISConfig`` fields) for the tokenizer's vocabulary.

    The text length comes from the tokenizer (``max_text_length``, the stand-ins' shared key, sized it).
    """
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items() if k != "max_text_length"}
    fields.setdefault("clip_resolution", fields.get("image_size", 416))
    fields.setdefault("context_length", tokenizer.model_max_length)
    unknown = set(fields) - {f.name for f in dataclasses.fields(CRISConfig)}
    if unknown:
        raise ValueError(f"models.cris.standin.arch: unknown keys {sorted(unknown)}")
    return CRIS(CRISConfig(**fields, vocab_size=len(tokenizer)))


def save_cris_folder(model: CRIS, tokenizer, out_dir) -> None:
    """Write a CRIS model folder: config, checkpoint in the community layout, tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(model.cfg), indent=1))
    state = {f"module.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, out / CHECKPOINT_FILE)
    tokenizer.save_pretrained(out)
