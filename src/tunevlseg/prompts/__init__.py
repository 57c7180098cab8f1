"""Prompt-tuning methods. Adding one = a module with a ``PromptLearner`` subclass + one line in ``METHODS``."""

from __future__ import annotations

from .base import ModelDims, Prompts, PromptLearner
from .cocoop import CoCoOp
from .coop import CoOp
from .finetune import FineTune
from .maple import MaPLe
from .shared_attention import SharedAttention
from .shared_separate import SharedSeparate
from .vpt import VPT
from .zeroshot import ZeroShot

METHODS: dict[str, type[PromptLearner]] = {
    "zeroshot": ZeroShot,
    "coop": CoOp,
    "vpt": VPT,
    "cocoop": CoCoOp,
    "maple": MaPLe,
    "shared_attention": SharedAttention,
    "shared_separate": SharedSeparate,
    "finetune": FineTune,
}


def build_learner(method: str, dims: ModelDims, depth: int, n_ctx: int = 4, **hparams) -> PromptLearner:
    """Instantiate the learner registered under ``method``; unknown names list the known ones."""
    if method not in METHODS:
        raise KeyError(f"unknown prompt method '{method}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[method](dims, depth=depth, n_ctx=n_ctx, **hparams)


__all__ = ["METHODS", "ModelDims", "Prompts", "PromptLearner", "build_learner"]
