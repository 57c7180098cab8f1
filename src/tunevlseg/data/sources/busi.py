"""BUSI: 780 breast ultrasound images in benign/malignant/normal folders; masks OR-merged; stratified split."""

from __future__ import annotations

import re
from pathlib import Path

from tunevlseg.data.spec import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import find_dir, require

CLASSES = ("benign", "malignant", "normal")
_IMAGE = re.compile(r"^(benign|malignant|normal) \((\d+)\)\.png$")
_PUBLISHED = re.compile(r"^(\d+)_(benign|malignant|normal)\.png$")  # medvlsm renames "benign (103).png" to 103_benign.png


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``Dataset_BUSI_with_GT/<class>/<class> (<n>).png``; every ``<class> (<n>)_mask*.png`` is OR-merged.

    Masks come as 8-bit grey, 1-bit, RGB and RGBA (alpha 255) PNGs, all {0, 255}.
    "normal" images keep their (empty) mask, or an empty one when the file is absent.
    Some images are pixel-identical across classes (e.g. benign (433) and
    malignant (145), with different masks): ``prepare`` groups them.
    """
    base = find_dir(root, "Dataset_BUSI_with_GT", "BUSI")
    rows = []
    for cls in CLASSES:
        folder = base / cls
        if not folder.is_dir():
            raise ValueError(f"{base}: missing class folder {cls!r}; is this the BUSI release?")
        for img in sorted(folder.iterdir(), key=lambda p: p.name):
            m = _IMAGE.match(img.name)
            if not m:
                continue
            masks = sorted(folder.glob(f"{img.stem}_mask*.png"))
            if not masks and cls != "normal":
                raise FileNotFoundError(f"BUSI: image {img} has no mask {img.stem}_mask.png")
            sid = f"{cls}_{int(m.group(2)):04d}"
            rows.append({"id": sid, "image": str(img), "mask": ";".join(str(p) for p in masks),
                         "phrase": "breast tumor", "group": sid, "stratum": cls,
                         "mask_rule": "or" if masks else "empty"})
    return require(rows, base, "BUSI images")


def published_id(record: dict) -> str | None:
    """``103_benign.png`` (medvlsm) -> ``benign_0103``."""
    m = _PUBLISHED.match(record["img_name"])
    return f"{m.group(2)}_{int(m.group(1)):04d}" if m else None


SPEC = DatasetSpec(
    id="busi",
    title="BUSI (Breast Ultrasound Images)",
    access="gated",
    files=(SourceFile("archive.zip"),),
    homepage="https://www.kaggle.com/datasets/aryashah2k/breast-ultrasound-images-dataset",
    instructions=("Sign in to Kaggle and download "
                  "https://www.kaggle.com/datasets/aryashah2k/breast-ultrasound-images-dataset (archive.zip)."),
    phrases="breast tumor",
    split_rule="seeded 80/10/10 stratified by class (benign/malignant/normal)",
    index=index,
    published_id=published_id,
)
