"""CheXlocalize: radiologist polygons for 10 pathologies on CheXpert val/test X-rays; split by patient."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tunevlseg.data.spec import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import find_file

TASKS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity", "Edema",
         "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Support Devices")
_CXR = re.compile(r"^(patient\d+)_(study\d+)_(view\d+_(frontal|lateral))$")


def _image_paths(root: Path) -> dict[str, Path]:
    """cxr id (``patient64541_study1_view1_frontal``) -> image file ``.../patient64541/study1/view1_frontal.jpg``."""
    return {f"{p.parent.parent.name}_{p.parent.name}_{p.stem}": p
            for p in sorted(root.rglob("patient*/study*/view*.jpg"))}


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """One row per (X-ray, pathology with at least one polygon) of ``gt_annotations_{val,test}.json``.

    The polygons of each row are written to ``out/polygons/<id>.json`` and
    rasterised by the preparation workers.
    """
    images = _image_paths(root)
    (out / "polygons").mkdir(parents=True, exist_ok=True)
    rows = []
    for part in ("val", "test"):
        path = find_file(root, f"gt_annotations_{part}.json", "CheXlocalize")
        try:
            annotations = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"CheXlocalize: {path} is not valid JSON: {e}") from e
        for cxr, entry in sorted(annotations.items()):
            m = _CXR.match(cxr)
            if not m or "img_size" not in entry:
                raise ValueError(f"CheXlocalize: {path}: unexpected entry {cxr!r} (needs patientN_studyN_viewN_* and img_size)")
            if cxr not in images:
                raise FileNotFoundError(f"CheXlocalize: no image {m.group(1)}/{m.group(2)}/{m.group(3)}.jpg for {cxr} under {root}")
            for task in TASKS:
                polygons = entry.get(task) or []
                if not polygons:
                    continue
                sid = f"{cxr}_{task.lower().replace(' ', '_')}"
                poly_file = out / "polygons" / f"{sid}.json"
                poly_file.write_text(json.dumps({"size": entry["img_size"], "polygons": polygons}))
                rows.append({"id": sid, "image": str(images[cxr]), "mask": f"polygons/{sid}.json",
                             "phrase": task.lower(), "group": m.group(1), "mask_rule": "polygons",
                             "context": f"{m.group(4)} view"})
    if not rows:
        raise ValueError(f"CheXlocalize: no annotated pathology found under {root} (empty or wrong archive?)")
    return rows


SPEC = DatasetSpec(
    id="chexlocalize",
    title="CheXlocalize",
    access="gated",
    files=(SourceFile("CheXlocalize.zip"),),
    homepage="https://stanfordaimi.azurewebsites.net/datasets/abfb76e5-70d5-4315-badc-c94dd82e3d6d",
    instructions=("Sign in to Stanford AIMI, accept the research use agreement of CheXlocalize and download it "
                  "(gt_annotations_{val,test}.json + CheXpert valid/test images) as CheXlocalize.zip."),
    phrases="the pathology name in lower case (10 tasks, e.g. 'pleural effusion')",
    split_rule="seeded 60/20/20 grouped by patient over the val+test X-rays",
    fractions=(0.6, 0.2, 0.2),
    prompt_context="view, e.g. 'frontal view'",
    index=index,
)
