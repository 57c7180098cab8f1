"""Text prompts per sample, computed deterministically from the class phrase and the mask.

Every manifest has the same prompt columns, so ``prompt: pK`` works on any dataset:

- ``p0`` = ``""`` (empty prompt)
- ``p1`` = ``"<phrase>."`` (the benchmark default)
- ``p2`` = ``"<size> <phrase>."``
- ``p3`` = ``"<count> <size> <phrase(s)> in the <location> of the image."``
  (``"no <phrase>."`` for an empty mask)
- ``p4`` = ``p3`` + the dataset's context sentence (CAMUS: view and phase;
  CheXlocalize: view), or ``p3`` where a dataset has none.

Facts from the original-size mask: objects = 8-connected components
(``scipy.ndimage.label``); size by foreground area fraction (> 0.30 large,
> 0.08 medium, < 0.001 tiny, else small); location = cell of a 3×3 grid
holding the foreground's centre of mass. Such prompts are derived from the
ground truth, as in the medical VLSM literature: they describe, not predict.
"""

from __future__ import annotations

import numpy as np

PROMPT_KEYS = ["p0", "p1", "p2", "p3", "p4"]
_ROWS = ("top", "", "bottom")
_COLS = ("left", "", "right")
_NUMBERS = ("no", "one", "two", "three", "four", "five")


def size_word(fraction: float) -> str:
    """Size word for a foreground area fraction (> 0.30 large, > 0.08 medium, < 0.001 tiny, else small)."""
    if fraction > 0.30:
        return "large"
    if fraction > 0.08:
        return "medium"
    if fraction < 0.001:
        return "tiny"
    return "small"


def location_word(mask: np.ndarray) -> str:
    """3×3-grid cell of the foreground's centre of mass: 'top left', 'top', …, 'center', …, 'bottom right'."""
    from scipy import ndimage  # here, not at import: the Snakefile's parse imports this module

    cy, cx = ndimage.center_of_mass(mask > 0)
    h, w = mask.shape
    row, col = _ROWS[min(int(3 * cy / h), 2)], _COLS[min(int(3 * cx / w), 2)]
    return " ".join(p for p in (row, col) if p) or "center"


def count_objects(mask: np.ndarray) -> int:
    """Number of 8-connected foreground components."""
    from scipy import ndimage

    return int(ndimage.label(mask > 0, structure=np.ones((3, 3), bool))[1])


def mask_facts(mask: np.ndarray) -> dict:
    """``{"count", "fraction", "size", "location"}`` of a binary mask (location None when empty)."""
    fraction = float((mask > 0).mean())
    count = count_objects(mask)
    return {
        "count": count,
        "fraction": fraction,
        "size": size_word(fraction),
        "location": location_word(mask) if count else None,
    }


def _plural(phrase: str, n: int) -> str:
    return phrase if n == 1 or phrase.endswith("s") else phrase + "s"


def build_prompts(phrase: str, mask: np.ndarray, context: str = "") -> dict[str, str]:
    """The prompt variants ``p0``…``p4`` for one sample (see the module docstring)."""
    phrase = phrase.strip().rstrip(".")
    facts = mask_facts(mask)
    n = facts["count"]
    if n == 0:
        p2 = p3 = f"no {phrase}."
    else:
        count = _NUMBERS[n] if n < len(_NUMBERS) else "many"
        p2 = f"{facts['size']} {phrase}."
        p3 = f"{count} {facts['size']} {_plural(phrase, n)} in the {facts['location']} of the image."
    context = context.strip().rstrip(".")
    p4 = f"{p3} {context[0].upper() + context[1:]}." if context else p3
    return {"p0": "", "p1": f"{phrase}.", "p2": p2, "p3": p3, "p4": p4}
