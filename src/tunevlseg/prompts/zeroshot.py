"""Zero-shot baseline: the frozen model with its hand-written prompt, nothing trained."""

from __future__ import annotations

from .base import Prompts, PromptLearner


class ZeroShot(PromptLearner, method="zeroshot"):
    """Adds no prompt; evaluated once per dataset without Optuna."""


    def __init__(self, dims, depth: int = 0, n_ctx: int = 0):
        super(PromptLearner, self).__init__()
        self.dims, self.depth, self.n_ctx = dims, 0, 0

    def forward(self, image_feature=None) -> Prompts:
        return Prompts()
