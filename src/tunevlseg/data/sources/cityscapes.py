"""Cityscapes fine annotations: gtFine labelIds -> one binary sample per present evaluation class (19)."""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.spec import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import find_dir, present_labels, require

# labelId -> name for the 19 evaluation classes (cityscapesScripts labels.py, trainId 0..18)
EVAL_CLASSES = {7: "road", 8: "sidewalk", 11: "building", 12: "wall", 13: "fence", 17: "pole", 19: "traffic light",
                20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky", 24: "person", 25: "rider", 26: "car",
                27: "truck", 28: "bus", 31: "train", 32: "motorcycle", 33: "bicycle"}


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png`` + ``gtFine/.../<stem>_gtFine_labelIds.png``.

    Official train -> train (validation carved by city), val -> test; group = city.
    """
    images_root = find_dir(root, "leftImg8bit", "Cityscapes leftImg8bit_trainvaltest")
    labels_root = find_dir(root, "gtFine", "Cityscapes gtFine_trainvaltest")
    entries = []
    for part, split in (("train", "train"), ("val", "test")):
        for label in sorted((labels_root / part).glob("*/*_gtFine_labelIds.png")):
            stem = label.name[: -len("_gtFine_labelIds.png")]
            image = images_root / part / label.parent.name / f"{stem}_leftImg8bit.png"
            if not image.is_file():
                raise FileNotFoundError(f"Cityscapes: label {label} has no image {image}")
            entries.append((stem, label.parent.name, split, image, label))
    require(entries, labels_root, "gtFine/{train,val}/<city>/*_gtFine_labelIds.png files")
    rows = []
    for (stem, city, split, image, label), present in zip(entries, present_labels([e[4] for e in entries], workers)):
        for c in present:
            if c in EVAL_CLASSES:
                rows.append({"id": f"{stem}_{c:02d}", "image": str(image), "mask": str(label),
                             "phrase": EVAL_CLASSES[c], "group": city, "mask_rule": f"label:{c}", "split": split})
    return rows


SPEC = DatasetSpec(
    id="cityscapes",
    title="Cityscapes (gtFine)",
    access="gated",
    files=(SourceFile("leftImg8bit_trainvaltest.zip"), SourceFile("gtFine_trainvaltest.zip")),
    homepage="https://www.cityscapes-dataset.com/downloads/",
    instructions=("Register at https://www.cityscapes-dataset.com/register/, then download packages "
                  "leftImg8bit_trainvaltest.zip (11GB) and gtFine_trainvaltest.zip (241MB)."),
    phrases="the evaluation class name (19 classes, e.g. 'traffic light')",
    split_rule="official train -> train (10 % of cities carved as validation), official val -> test",
    fractions=(0.9, 0.1, 0.0),
    val_fraction=0.1,
    index=index,
)
