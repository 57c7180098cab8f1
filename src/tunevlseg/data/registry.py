"""The dataset registry: one :class:`DatasetSpec` per real dataset (one module each in ``sources/``).

Each spec (:mod:`tunevlseg.data.spec`) declares where the raw data comes from (direct download with URL and
sha256, or a gated archive the user drops at a documented path), the reader
turning the extracted release into ``samples.csv`` rows, the class phrase(s),
the split rule and the prompt context. Adding a dataset = one module in
``sources/`` + one line in :data:`REGISTRY`.
"""

from __future__ import annotations

from tunevlseg.data.sources import (bkai, busi, camus, chexlocalize, cityscapes, clinicdb, dfu2022, isic2016, kvasir,
                                    voc2012)
from tunevlseg.data.spec import DatasetSpec

REGISTRY: dict[str, DatasetSpec] = {s.id: s for s in (
    kvasir.SPEC,
    clinicdb.SPEC,
    bkai.SPEC,
    isic2016.SPEC,
    dfu2022.SPEC,
    busi.SPEC,
    camus.SPEC,
    chexlocalize.SPEC,
    voc2012.SPEC,
    cityscapes.SPEC,
)}


def get_spec(source: str) -> DatasetSpec:
    """The spec of a registry id; ``KeyError`` listing the known ids otherwise."""
    if source not in REGISTRY:
        raise KeyError(f"unknown dataset source {source!r}; known: {sorted(REGISTRY)} (or 'synthetic')")
    return REGISTRY[source]
