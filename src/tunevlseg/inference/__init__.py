"""Using a tuned adapter: the exported folder's format (:mod:`.files`), loading it onto its base model and
predicting masks (:mod:`.tuned`), and the forward pass's device and resizing helpers (:mod:`.runtime`).

Part of the reusable library: imports models, prompts and data, never training or reporting code.
Importing this package is light; torch and the models load with :func:`load_adapter`.
"""

from __future__ import annotations


def load_adapter(folder, weights=None, device="auto"):
    """Load an exported adapter folder onto its base model (:func:`tunevlseg.inference.tuned.load_adapter`)."""
    from .tuned import load_adapter as _load

    return _load(folder, weights=weights, device=device)


__all__ = ["load_adapter"]
