"""Checkpoints hold only the trainable parameters (kilobytes), never the frozen backbone."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data.atomic import atomic_write


def save_trainable(module: nn.Module, path: Path) -> None:
    """Atomically save the parameters of ``module`` that require gradients."""
    state = {k: v.detach().cpu() for k, v in module.named_parameters() if v.requires_grad}
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_trainable(module: nn.Module, path: Path) -> None:
    """Load a checkpoint written by ``save_trainable``; every saved tensor must match a parameter."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    params = dict(module.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ValueError(f"{path}: checkpoint has parameters the model lacks: {unknown}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
