"""CVC-ClinicDB: 612 polyp frames (PNG); masks thresholded at 127; seeded 80/10/10 split."""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.registry import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import files, find_dir, require


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``PNG/Original/<n>.png`` + ``PNG/Ground Truth/<n>.png``."""
    images = find_dir(root, "PNG/Original", "CVC-ClinicDB")
    masks = find_dir(root, "PNG/Ground Truth", "CVC-ClinicDB")
    rows = []
    for img in require(files(images, (".png",)), images, "images"):
        mask = masks / img.name
        if not mask.is_file():
            raise FileNotFoundError(f"CVC-ClinicDB: image {img} has no mask {mask}")
        rows.append({"id": f"clinicdb_{img.stem}", "image": str(img), "mask": str(mask), "phrase": "polyp",
                     "group": img.stem, "mask_rule": "threshold:127"})
    return rows


SPEC = DatasetSpec(
    id="clinicdb",
    title="CVC-ClinicDB",
    access="gated",
    files=(SourceFile("archive.zip"),),
    homepage="https://www.kaggle.com/datasets/balraj98/cvcclinicdb",
    instructions=("Sign in to Kaggle, open https://www.kaggle.com/datasets/balraj98/cvcclinicdb and click "
                  "Download (or `kaggle datasets download balraj98/cvcclinicdb`); the file is archive.zip."),
    phrases="polyp",
    split_rule="seeded 80/10/10 by image",
    index=index,
)
