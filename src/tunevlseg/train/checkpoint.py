"""Checkpoints hold only the trainable parameters (kilobytes), never the frozen backbone."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data.atomic import atomic_write


def trainable_state(module: nn.Module) -> dict:
    """The parameters of ``module`` that require gradients, and the persistent buffers of the submodules that
    own them (a trained BatchNorm's running statistics: full fine-tuning of CRIS), detached on the CPU."""
    params = {k: v for k, v in module.named_parameters() if v.requires_grad}
    owners = {k.rpartition(".")[0] for k in params}
    persistent = set(module.state_dict())
    buffers = {k: v for k, v in module.named_buffers() if k in persistent and k.rpartition(".")[0] in owners}
    return {k: v.detach().cpu() for k, v in {**params, **buffers}.items()}


def save_trainable(module: nn.Module, path: Path) -> None:
    """Atomically save :func:`trainable_state` of ``module``."""
    state = trainable_state(module)
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_trainable(module: nn.Module, path: Path) -> None:
    """Load a checkpoint written by ``save_trainable``; every saved tensor must match a parameter."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    params = {**dict(module.named_buffers()), **dict(module.named_parameters())}
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ValueError(f"{path}: checkpoint has parameters the model lacks: {unknown}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def save_resume_state(path: Path, progress: dict, module: nn.Module, optimizer, scheduler,
                      generator: torch.Generator) -> None:
    """Atomically save everything needed to continue training after the last finished epoch.

    ``progress`` holds plain values (epoch counters, best score, history rows). Trainable
    parameters, optimizer and scheduler states and the RNG states (global torch, CUDA, the
    training loader's shuffling generator) are saved with it.
    """
    state = dict(
        progress=progress,
        params={k: v.detach().cpu() for k, v in module.named_parameters() if v.requires_grad},
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng_torch=torch.get_rng_state(),
        rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        rng_loader=generator.get_state(),
    )
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_resume_state(path: Path, module: nn.Module, optimizer, scheduler, generator: torch.Generator,
                      device: torch.device) -> dict:
    """Restore a state written by :func:`save_resume_state` into the given objects; return ``progress``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    params = {k: v for k, v in module.named_parameters() if v.requires_grad}
    if set(state["params"]) != set(params):
        raise ValueError(f"{path}: the saved state does not match this trial's learner "
                         f"(missing {sorted(set(params) - set(state['params']))[:5]}, "
                         f"unexpected {sorted(set(state['params']) - set(params))[:5]})")
    with torch.no_grad():
        for name, value in state["params"].items():
            params[name].copy_(value.to(device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_torch"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    generator.set_state(state["rng_loader"])
    return state["progress"]
