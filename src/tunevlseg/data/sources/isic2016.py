"""ISIC 2016 Part 1 (lesion segmentation): official train 900 / test 379; validation carved from train."""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.spec import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import files, find_dir, require

BASE = "https://isic-challenge-data.s3.amazonaws.com/2016/"
PARTS = {"train": "Training", "test": "Test"}


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``ISBI2016_ISIC_Part1_{Training,Test}_Data/ISIC_<n>.jpg`` + ``..._GroundTruth/ISIC_<n>_Segmentation.png``."""
    rows = []
    for split, part in PARTS.items():
        images = find_dir(root, f"ISBI2016_ISIC_Part1_{part}_Data", "ISIC 2016")
        masks = find_dir(root, f"ISBI2016_ISIC_Part1_{part}_GroundTruth", "ISIC 2016")
        for img in require(files(images, (".jpg",)), images, "images"):
            mask = masks / f"{img.stem}_Segmentation.png"
            if not mask.is_file():
                raise FileNotFoundError(f"ISIC 2016: image {img} has no mask {mask}")
            rows.append({"id": img.stem, "image": str(img), "mask": str(mask), "phrase": "skin lesion",
                         "group": img.stem, "split": split})
    return rows


SPEC = DatasetSpec(
    id="isic2016",
    title="ISIC 2016 Task 1",
    access="direct",
    files=tuple(
        SourceFile(f"ISBI2016_ISIC_Part1_{part}_{kind}.zip", f"{BASE}ISBI2016_ISIC_Part1_{part}_{kind}.zip", None)
        for part in ("Training", "Test")
        for kind in ("Data", "GroundTruth")
    ),
    homepage="https://challenge.isic-archive.com/data/#2016",
    instructions="Public download (CC-0).",
    phrases="skin lesion",
    split_rule="official train/test; validation = 10 % of train (seeded)",
    fractions=(0.9, 0.1, 0.0),
    val_fraction=0.1,
    index=index,
)
