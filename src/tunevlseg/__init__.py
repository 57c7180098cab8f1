"""TuneVLSeg: benchmark prompt tuning for vision-language segmentation models."""

__version__ = "0.1.0"


def load_adapter(folder, weights=None, device="auto"):
    """Load an exported adapter (``tunevlseg export``) onto its base model; ``.predict(images)`` gives
    probability maps. See :func:`tunevlseg.inference.tuned.load_adapter` (imported on first use)."""
    from .inference.tuned import load_adapter as _load

    return _load(folder, weights=weights, device=device)
