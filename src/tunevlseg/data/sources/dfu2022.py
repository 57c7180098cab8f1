"""DFUC 2022: 2000 diabetic foot ulcer images (JPG) with PNG masks; seeded 80/10/10 split."""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.registry import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import files, find_dir, require


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``DFUC2022_train_images/<n>.jpg`` + ``DFUC2022_train_masks/<n>.png`` (test masks are not released)."""
    images = find_dir(root, "DFUC2022_train_images", "DFUC 2022")
    masks = find_dir(root, "DFUC2022_train_masks", "DFUC 2022")
    rows = []
    for img in require(files(images, (".jpg", ".jpeg")), images, "images"):
        mask = masks / f"{img.stem}.png"
        if not mask.is_file():
            raise FileNotFoundError(f"DFUC 2022: image {img} has no mask {mask}")
        rows.append({"id": f"dfu_{img.stem}", "image": str(img), "mask": str(mask), "phrase": "foot ulcer",
                     "group": img.stem})
    return rows


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
