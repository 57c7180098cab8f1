"""The dataset registry: one :class:`DatasetSpec` per real dataset (one module each in ``sources/``).

A spec declares where the raw data comes from (direct download with URL and
sha256, or a gated archive the user drops at a documented path), the reader
turning the extracted release into ``samples.csv`` rows, the class phrase(s),
the split rule and the prompt context. Adding a dataset = one module in
``sources/`` + one line in :data:`REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SourceFile:
    """One file of a release: its name under ``<raw_dir>/<id>/``, its URL (None = gated) and sha256 (None = unknown)."""

    name: str
    url: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know about one real dataset.

    ``index(root, out, workers)`` reads the extracted release under ``root``
    and returns samples.csv rows (it may write helper files, e.g. polygon
    JSON, under ``out``). ``fractions``/``val_fraction`` are the default split
    rule (config ``split_fractions`` overrides); ``prepare`` holds other
    preparation defaults (e.g. an intensity window).
    """

    id: str
    title: str
    access: str  # "direct" or "gated"
    files: tuple[SourceFile, ...]
    homepage: str
    instructions: str
    phrases: str
    split_rule: str
    index: Callable[..., list[dict]]
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    val_fraction: float | None = None
    prompt_context: str = ""
    prepare: dict = field(default_factory=dict)

    def how_to_get(self, raw: Path) -> str:
        """One paragraph telling the user what to fetch and where to put it."""
        names = ", ".join(f.name for f in self.files)
        if self.access == "direct":
            return f"{self.id}: downloaded automatically from {self.files[0].url} (and siblings) into {raw}/"
        return (f"{self.id}: {self.instructions} Put {names} into {raw}/ (or set datasets.<name>.archive "
                f"to the file, to a folder holding it, or to an already extracted copy).")


def _load() -> dict[str, DatasetSpec]:
    from tunevlseg.data.sources import (bkai, camus, chexlocalize, cityscapes, clinicdb, dfu2022, busi, isic2016,
                                        kvasir, voc2012)

    specs = [
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
    ]
    return {s.id: s for s in specs}


REGISTRY: dict[str, DatasetSpec] = _load()


def get_spec(source: str) -> DatasetSpec:
    """The spec of a registry id; ``KeyError`` listing the known ids otherwise."""
    if source not in REGISTRY:
        raise KeyError(f"unknown dataset source {source!r}; known: {sorted(REGISTRY)} (or 'synthetic')")
    return REGISTRY[source]
