"""Kvasir-SEG: 1000 polyp images with JPEG masks (thresholded at 127); seeded 80/10/10 split."""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.spec import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import paired_rows


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``Kvasir-SEG/images/<id>.jpg`` + ``Kvasir-SEG/masks/<id>.jpg`` (RGB JPEG masks, grey > 127).

    ``kavsir_bboxes.json`` beside the folders (boxes per image) is not used.
    """
    return paired_rows(root, "Kvasir-SEG/images", "Kvasir-SEG/masks", "Kvasir-SEG", image_suffixes=(".jpg", ".jpeg", ".png"),
                       phrase="polyp", mask_rule="threshold:127")


SPEC = DatasetSpec(
    id="kvasir",
    title="Kvasir-SEG",
    access="direct",
    files=(SourceFile("kvasir-seg.zip", "https://datasets.simula.no/downloads/kvasir-seg.zip", None),),
    homepage="https://datasets.simula.no/kvasir-seg/",
    instructions="Public download (CC BY 4.0).",
    phrases="polyp",
    split_rule="seeded 80/10/10 by image",
    index=index,
)
