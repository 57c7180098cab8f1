"""DFUC 2022: 2000 diabetic foot ulcer images (JPG) with PNG masks; seeded 80/10/10 split."""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.spec import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import paired_rows


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``DFUC2022_train_images/<n>.jpg`` + ``DFUC2022_train_masks/<n>.png`` (test masks are not released)."""
    return paired_rows(root, "DFUC2022_train_images", "DFUC2022_train_masks", "DFUC 2022",
                       image_suffixes=(".jpg", ".jpeg"), phrase="foot ulcer", id_prefix="dfu_", mask_suffix=".png")


SPEC = DatasetSpec(
    id="dfu2022",
    title="DFUC 2022",
    access="gated",
    files=(SourceFile("DFUC2022_train_release.zip"),),
    homepage="https://dfu-challenge.github.io/dfuc2022.html",
    instructions=("Sign the DFUC licence agreement linked from https://dfu-challenge.github.io/dfuc2022.html and "
                  "send it as instructed; after approval download DFUC2022_train_release.zip."),
    phrases="foot ulcer",
    split_rule="seeded 80/10/10 by image (official test masks are not public)",
    index=index,
)
