"""What a real dataset is, as data: :class:`SourceFile` and :class:`DatasetSpec`.

The lowest layer of the dataset registry: ``sources/*`` build one spec each,
``registry`` collects them. This module imports nothing of the package, so no
import cycle can form (``sources`` -> ``spec``; ``registry`` -> ``sources``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")  # also the held-out order: a copy in a later split outranks one in an earlier



@dataclass(frozen=True)
class SourceFile:
    """One file of a release: its name under ``<raw_dir>/<id>/``, its URL (None = gated) and sha256 (None = unknown).

    ``optional`` files are ingested when present and skipped otherwise (e.g.
    CAMUS's separate ``database_split.zip``).
    """

    name: str
    url: str | None = None
    sha256: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know about one real dataset.

    ``index(root, out, workers)`` reads the extracted release under ``root``
    and returns samples.csv rows (it may write helper files, e.g. polygon
    JSON, under ``out``). ``fractions``/``val_fraction`` are the default split
    rule (config ``split_fractions`` overrides); ``prepare`` holds other
    preparation defaults (e.g. an intensity window). ``published_id(record)``
    maps a record of a published annotation file (medvlsm ``anns/*.json``:
    ``img_name``, ``mask_name``, ``prompts``) to the sample id our reader
    gives it; ``None`` = match the record's ``img_name`` to the file name of
    a sample's image (see :mod:`tunevlseg.data.published`).
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
    published_id: Callable[[dict], str] | None = None

    @property
    def required_files(self) -> tuple[SourceFile, ...]:
        return tuple(f for f in self.files if not f.optional)

    def how_to_get(self, raw: Path) -> str:
        """One paragraph telling the user what to fetch and where to put it."""
        names = ", ".join(f.name + (" (optional)" if f.optional else "") for f in self.files)
        if self.access == "direct":
            return f"{self.id}: downloaded automatically from {self.files[0].url} (and siblings) into {raw}/"
        return (f"{self.id}: {self.instructions} Put {names} into {raw}/ (or set datasets.<name>.archive "
                f"to the file, to a folder holding it, or to an already extracted copy).")
