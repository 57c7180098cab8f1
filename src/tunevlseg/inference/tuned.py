"""A tuned adapter loaded for use: the base model, its learner with the exported tensors, and ``predict``.

``predict`` prepares each image exactly as the benchmark prepared and evaluated its test images:
decoded to uint8 RGB, resized to the adapter's input size with the preparation's own resize
(:func:`tunevlseg.data.prepare.resize_image`), scaled to [0, 1] and normalised by the model
(``PromptableModel.normalize``); the logits are brought back to the image's size bilinearly and
passed through the sigmoid (:func:`tunevlseg.inference.runtime.upsample_logits`, as the test metrics).
A mask is ``probability > threshold``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.prepare import resize_image
from ..data.prompts import build_prompts
from ..methods import get_method
from ..models.base import ImageFeatures
from ..models.registry import load_adapter as load_base_model
from ..prompts import build_learner
from .files import read_config, read_tensors
from .runtime import autocast_for, pick_device, upsample_logits

log = logging.getLogger(__name__)
#: Prompt variants built from the class phrase alone; p2-p4 describe the mask (docs/how-to/real-datasets.md, "Prompts").
PHRASE_ONLY_VARIANTS = ("p0", "p1")


class TunedAdapter:
    """A base model with the learned tensors of an exported adapter; see :func:`load_adapter`."""

    def __init__(self, config: dict, model, learner, device: torch.device, folder: Path | None = None):
        self.config, self.model, self.learner, self.device, self.folder = config, model, learner, device, folder

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"])

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    def prompt_for(self, phrase: str | None = None, mask: np.ndarray | None = None) -> str:
        """The text the model reads, built from ``phrase`` (default: the cell's) with the cell's prompt variant.

        Variants p2-p4 describe the target (size, count, location): they need its ``mask``.
        """
        prompt = self.config["prompt"]
        phrase = prompt.get("phrase") if phrase is None else phrase
        variant = prompt.get("variant") or "p1"
        if phrase is None:
            raise ValueError(f"{self._name()}: the cell had several phrases ({', '.join(prompt.get('phrases', []))}); "
                             "pass phrase=")
        if variant not in PHRASE_ONLY_VARIANTS and mask is None:
            raise ValueError(f"{self._name()}: the adapter was tuned with prompt variant {variant}, which describes "
                             "the target mask; pass masks (CLI: --masks) or explicit prompts=")
        return build_prompts(phrase, np.zeros((1, 1), np.uint8) if mask is None else mask)[variant]

    @torch.no_grad()
    def logits(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> torch.Tensor:
        """Logits (B, 1, S, S) at the adapter's input size for (H, W, 3) uint8 images already resized to S."""
        pixels = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2)
        pixels = pixels.contiguous().float().div_(255.0)
        text = self.model.tokenize(list(prompts), self.learner.text_ctx)
        with autocast_for(self.device, bool(self.config.get("amp", True))):
            rounded = self.config.get("image_features_dtype", "float32") != "float32"
            if rounded and "vision" not in self.learner.modalities:
                return self.model.forward_frozen(self._cached_like(pixels), text, self.learner).float()
            return self.model(pixels, text, self.learner).float()

    def _cached_like(self, pixels: torch.Tensor) -> ImageFeatures:
        """Unprompted image features rounded to the dtype the cell's feature cache stored them in (CoOp and
        CoCoOp cells trained and were tested on the cache: their test Dice is that of rounded features)."""
        dtype = getattr(torch, self.config["image_features_dtype"])
        feats = self.model.encode_image(self.model.normalize(pixels), None, pooled=self.learner.uses_image_feature)
        maps = tuple(m.float().to(dtype).float() for m in feats.maps)
        pooled = None if feats.pooled is None else feats.pooled.float().to(dtype).float()
        return ImageFeatures(maps, pooled, feats.input_size)

    def predict(self, images, phrase: str | None = None, *, prompts: Sequence[str] | None = None,
                batch_size: int = 8):
        """Probability maps (float32, each at its input's (H, W)) for one image or a sequence of images.

        ``images``: numpy arrays (H, W) or (H, W, 3) (also (H, W, 1), (H, W, 4): alpha dropped), uint8, or
        float in [0, 1]. ``phrase``: the class phrase (default: the cell's), built into the cell's prompt
        variant; ``prompts``: the exact text per image instead. One array in, one map out.
        """
        single = isinstance(images, np.ndarray) and images.ndim in (2, 3)
        batch = [images] if single else list(images)
        if prompts is None:
            prompts = [self.prompt_for(phrase)] * len(batch)
        if len(prompts) != len(batch):
            raise ValueError(f"{len(prompts)} prompts for {len(batch)} images")
        out = []
        for start in range(0, len(batch), batch_size):
            chunk = [as_rgb_uint8(a, f"image {start + i}") for i, a in enumerate(batch[start:start + batch_size])]
            logits = self.logits([resize_image(a, self.image_size) for a in chunk], prompts[start:start + batch_size])
            for logit, image in zip(logits.cpu(), chunk, strict=True):
                out.append(torch.sigmoid(upsample_logits(logit, image.shape[:2])).numpy())
        return out[0] if single else out

    def _name(self) -> str:
        return str(self.folder) if self.folder is not None else "adapter"


def as_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB from an (H, W) / (H, W, 1|3|4) array, uint8 or float in [0, 1]; one-line errors."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        image = image[..., :3] if image.shape[-1] != 1 else image[..., 0]
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[-1] == 3):
        raise ValueError(f"{what}: expected an (H, W) or (H, W, 3) array, got shape {image.shape}")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.floating):
        lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(f"{what}: float images must hold values in [0, 1], got [{lo:g}, {hi:g}]")
        image = np.round(image * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        if image.size and (image.min() < 0 or image.max() > 255):
            raise ValueError(f"{what}: {image.dtype} values outside 0..255; pass uint8 or float in [0, 1]")
        image = image.astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image)


def check_base_weights(config: dict, weights: str, folder: Path | str = "adapter") -> None:
    """Refuse base weights whose identity (:func:`tunevlseg.study.weights_identity`) is not the recorded one."""
    from ..study import weights_identity

    recorded = config["base_weights"].get("identity") or {}
    found = weights_identity(weights)
    if _same_identity(recorded, found):
        return
    raise ValueError(f"{folder}: base weights {weights} are not the ones the adapter was tuned on "
                     f"({_describe(found)}; recorded: {_describe(recorded)}); pass weights= the original "
                     f"{config['base_weights'].get('source')}")


def _same_identity(recorded: dict, found: dict) -> bool:
    if "sha256" in recorded:
        return recorded.get("sha256") == found.get("sha256")
    if "folder" in recorded:  # hidden files (e.g. Snakemake's .snakemake_timestamp) are not weights
        return _visible(recorded["folder"]) == _visible(found.get("folder") or {})
    if "hub" in recorded:  # a revision known to both must agree
        same_rev = not (recorded.get("revision") and found.get("revision")) or recorded["revision"] == found["revision"]
        return recorded["hub"] == found.get("hub") and same_rev
    return False


def _visible(files: dict) -> dict:
    return {k: v for k, v in files.items() if not any(part.startswith(".") for part in k.split("/"))}


def _describe(identity: dict) -> str:
    if "sha256" in identity:
        return f"file sha256 {identity['sha256'][:12]}"
    if "folder" in identity:
        files = sorted(_visible(identity["folder"]).items())
        return "folder " + ", ".join(f"{k} {v[:12]}" for k, v in files[:3]) + (" ..." if len(files) > 3 else "")
    if "hub" in identity:
        return f"hub {identity['hub']}" + (f"@{identity['revision']}" if identity.get("revision") else "")
    return "unknown"


def build_tuned(config: dict, tensors: dict, weights: str | None = None, device: str = "auto",
                folder: Path | None = None) -> TunedAdapter:
    """The base model (identity checked) with a learner of the config's method holding ``tensors``."""
    weights = weights or config["base_weights"]["source"]
    check_base_weights(config, weights, folder or "adapter")
    dev = pick_device(device)
    model = load_base_model(config["model"], weights, config.get("model_options") or {})
    method = get_method(config["method"])
    options = dict(config.get("learner_options") or {})
    if method.trains_model:
        learner = build_learner(config["method"], model.dims, depth=0, model=model.model)
        _load_state(model.model, tensors, folder)
    else:
        learner = build_learner(config["method"], model.dims, depth=int(config["depth"]), n_ctx=int(config["n_ctx"]),
                                **options)
        _load_state(learner, tensors, folder)
    learner.requires_grad_(False)
    return TunedAdapter(config, model.to(dev).eval(), learner.to(dev).eval(), dev, folder)


def _load_state(module: torch.nn.Module, tensors: dict, folder) -> None:
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    bad = [k for k in set(own) & set(tensors) if tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(f"{folder or 'adapter'}: the tensors do not fit the configured learner (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {sorted(bad)[:3]})")
    module.load_state_dict(tensors, strict=True)


def load_adapter(folder: str | Path, weights: str | None = None, device: str = "auto") -> TunedAdapter:
    """Load an exported adapter folder (``tunevlseg export``) onto its base model.

    ``weights``: the base weights (hub name, folder or file); default the path recorded at export.
    Weights whose identity (sha256 of each file, or hub name and revision) differs from the recorded one
    are refused. ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda:0``, ...
    """
    folder = Path(folder)
    config = read_config(folder)
    return build_tuned(config, read_tensors(folder), weights, device, folder)


__all__ = ["TunedAdapter", "as_rgb_uint8", "build_tuned", "check_base_weights", "load_adapter"]
