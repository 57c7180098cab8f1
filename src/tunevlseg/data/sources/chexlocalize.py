"""CheXlocalize: radiologist polygons for 10 pathologies on CheXpert val/test X-rays; split by patient."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from tunevlseg.data.sources.common import find_file
from tunevlseg.data.spec import DatasetSpec, SourceFile

log = logging.getLogger(__name__)
TASKS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity", "Edema",
         "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Support Devices")
ALIASES = {"Lung Opacity": "Airspace Opacity"}  # the CheXpert label header's name for the same task
PARTS = {"val": ("val", "valid"), "test": ("test",)}  # annotation part -> folder names of its images
_CXR = re.compile(r"^(patient\d+)_(study\d+)_(view\d+_(frontal|lateral))$")


def _image_paths(root: Path) -> dict[str, dict[str, Path]]:
    """cxr id (``patient64541_study1_view1_frontal``) -> {image folder (``val``/``test``): ``.../patient64541/study1/view1_frontal.jpg``}."""
    out: dict[str, dict[str, Path]] = {}
    for p in sorted(root.rglob("patient*/study*/view*.jpg")):
        out.setdefault(f"{p.parent.parent.name}_{p.parent.name}_{p.stem}", {})[p.parents[2].name] = p
    return out


def _image_of(images: dict[str, dict[str, Path]], cxr: str, part: str, path: Path, root: Path) -> Path:
    """The X-ray of ``cxr`` in the folder of its part (``CheXpert/val/…``), else the only one found."""
    found = images.get(cxr, {})
    for folder in PARTS[part]:
        if folder in found:
            return found[folder]
    if len(found) == 1:
        return next(iter(found.values()))
    m = _CXR.match(cxr)
    raise FileNotFoundError(f"CheXlocalize: {path} annotates {cxr} but {'several' if found else 'no'} images "
                            f"{m.group(1)}/{m.group(2)}/{m.group(3)}.jpg are under {root}")


def _polygons(entry: dict, cxr: str, path: Path) -> dict[str, list]:
    """Task -> polygons of one X-ray; only positive pathologies appear as keys (an empty list is skipped)."""
    out = {}
    for key, polygons in entry.items():
        if key == "img_size":
            continue
        task = ALIASES.get(key, key)
        if task not in TASKS:
            raise ValueError(f"CheXlocalize: {path}: {cxr} has unknown pathology {key!r} (known: {list(TASKS)})")
        if not isinstance(polygons, list):
            raise ValueError(f"CheXlocalize: {path}: {cxr} {key!r} is not a list of polygons")
        if polygons:
            out[task] = polygons
    return out


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """One row per (X-ray, pathology with at least one polygon) of ``gt_annotations_{val,test}.json``.

    Either file may be missing (the official sample ships val only): the
    split rule is the same seeded patient split over what is present.
    ``img_size`` is (height, width), polygon points are (x, y) at that
    resolution; lateral views are annotated too. The polygons of each row are
    written to ``out/polygons/<id>.json`` and rasterised by the preparation
    workers.
    """
    parts = {part: find_file(root, f"gt_annotations_{part}.json", "CheXlocalize", required=False) for part in PARTS}
    parts = {part: path for part, path in parts.items() if path is not None}
    if not parts:
        raise ValueError(f"{root}: neither gt_annotations_val.json nor gt_annotations_test.json found; "
                         f"is this the CheXlocalize release?")
    if len(parts) < len(PARTS):
        log.warning("CheXlocalize: only %s annotations found; splitting their patients 60/20/20", ", ".join(parts))
    images = _image_paths(root)
    (out / "polygons").mkdir(parents=True, exist_ok=True)
    rows = []
    for part, path in parts.items():
        try:
            annotations = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"CheXlocalize: {path} is not valid JSON: {e}") from e
        for cxr, entry in sorted(annotations.items()):
            m = _CXR.match(cxr)
            size = entry.get("img_size") if isinstance(entry, dict) else None
            if not m or not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, (int, float)) for v in size)):
                raise ValueError(f"CheXlocalize: {path}: unexpected entry {cxr!r} (needs patientN_studyN_viewN_* and "
                                 f"img_size [height, width])")
            size = [int(v) for v in size]
            polygons = _polygons(entry, cxr, path)
            if not polygons:
                continue
            image = _image_of(images, cxr, part, path, root)
            for task, polys in polygons.items():
                sid = f"{cxr}_{task.lower().replace(' ', '_')}"
                poly_file = out / "polygons" / f"{sid}.json"
                poly_file.write_text(json.dumps({"size": size, "polygons": polys}))
                rows.append({"id": sid, "image": str(image), "mask": f"polygons/{sid}.json",
                             "phrase": task.lower(), "group": m.group(1), "mask_rule": "polygons",
                             "context": f"{m.group(4)} view"})
    if not rows:
        raise ValueError(f"CheXlocalize: no annotated pathology found under {root} (empty or wrong archive?)")
    return rows


def published_id(record: dict) -> str:
    """medvlsm names the mask ``<cxr>_<task>.png``: its stem is our sample id."""
    return Path(record.get("mask_name") or "").stem


SPEC = DatasetSpec(
    id="chexlocalize",
    title="CheXlocalize",
    access="gated",
    files=(SourceFile("CheXlocalize.zip"),),
    homepage="https://stanfordaimi.azurewebsites.net/datasets/abfb76e5-70d5-4315-badc-c94dd82e3d6d",
    instructions=("Sign in to Stanford AIMI, accept the research use agreement of CheXlocalize and download it "
                  "(gt_annotations_{val,test}.json + the CheXpert/val/ and CheXpert/test/ images) as CheXlocalize.zip."),
    phrases="the pathology name in lower case (10 tasks, e.g. 'pleural effusion')",
    split_rule=("seeded 60/20/20 grouped by patient over the annotated X-rays present: val + test (the reference's "
                "1279/446/452 pairs), or val only (the official sample), or test only"),
    fractions=(0.6, 0.2, 0.2),
    prompt_context="view, e.g. 'frontal view'",
    index=index,
    published_id=published_id,
)
