"""PASCAL VOC 2012 segmentation: palette PNGs -> one binary sample per present class (void = background)."""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.spec import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import find_dir, present_labels

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table",
           "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor")


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``VOCdevkit/VOC2012`` ``ImageSets/Segmentation/{train,val}.txt``: official train -> train, val -> test."""
    base = find_dir(root, "VOCdevkit/VOC2012", "PASCAL VOC 2012")
    entries = []
    for part, split in (("train", "train"), ("val", "test")):
        listing = base / "ImageSets" / "Segmentation" / f"{part}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"VOC2012: missing split list {listing}")
        entries += [(name, split) for name in listing.read_text().split()]
    labels = [base / "SegmentationClass" / f"{name}.png" for name, _ in entries]
    for p in labels:
        if not p.is_file():
            raise FileNotFoundError(f"VOC2012: missing label image {p}")
    rows = []
    for (name, split), label_path, present in zip(entries, labels, present_labels(labels, workers)):
        for c in present:
            if 1 <= c <= 20:  # 0 background, 255 void
                rows.append({"id": f"{name}_{c:02d}", "image": str(base / "JPEGImages" / f"{name}.jpg"),
                             "mask": str(label_path), "phrase": CLASSES[c - 1], "group": name,
                             "mask_rule": f"label:{c}", "split": split})
    return rows


SPEC = DatasetSpec(
    id="voc2012",
    title="PASCAL VOC 2012",
    access="direct",
    files=(SourceFile("VOCtrainval_11-May-2012.tar",
                      "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar", None),),
    homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
    instructions="Public download.",
    phrases="the class name (20 classes, e.g. 'dining table')",
    split_rule="official train -> train (10 % carved as validation, by image), official val -> test",
    fractions=(0.9, 0.1, 0.0),
    val_fraction=0.1,
    index=index,
)
