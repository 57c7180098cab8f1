"""Full fine-tuning baseline: no prompts, every weight of the model is trained."""

from __future__ import annotations

from torch import nn

from .base import ModelDims, Prompts, PromptLearner


class FineTune(PromptLearner, method="finetune"):
    """Owns the model itself, so the optimiser and the checkpoint see all of its weights.

    The adapter runs its plain (prompt-free) forward; the weights it uses are this
    learner's parameters. Each trial must start from a freshly loaded model.
    """


    def __init__(self, dims: ModelDims, depth: int = 0, n_ctx: int = 0, model: nn.Module | None = None):
        nn.Module.__init__(self)
        if model is None:
            raise ValueError("finetune needs the model to train (model=...)")
        self.dims, self.depth, self.n_ctx = dims, 0, 0
        self.model = model.requires_grad_(True)

    def forward(self, image_feature=None) -> Prompts:
        return Prompts()
