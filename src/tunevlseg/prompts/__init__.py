"""Prompt-tuning methods: one ``PromptLearner`` subclass per method, found through the method catalogue.

Adding a method = a module here with a ``PromptLearner`` subclass (``method="<name>"``) and one
record in :mod:`tunevlseg.methods` naming it.
"""

from __future__ import annotations

import importlib

from ..methods import get_method
from .base import ModelDims, PromptLearner, Prompts


def learner_class(method: str) -> type[PromptLearner]:
    """The learner class the catalogue names for ``method`` (``KeyError`` listing the known methods)."""
    module, _, name = get_method(method).learner.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if cls.method != method:
        raise TypeError(f"{module}.{name} declares method {cls.method!r}, the catalogue says {method!r}")
    return cls


def build_learner(method: str, dims: ModelDims, depth: int, n_ctx: int = 4, **hparams) -> PromptLearner:
    """Instantiate the learner of ``method``; unknown names list the known ones."""
    return learner_class(method)(dims, depth=depth, n_ctx=n_ctx, **hparams)


__all__ = ["ModelDims", "PromptLearner", "Prompts", "build_learner", "learner_class"]
