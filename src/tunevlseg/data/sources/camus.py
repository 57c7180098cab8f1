"""CAMUS: 500 patients, 2CH/4CH × ED/ES NIfTI frames; one sample per structure; official patient split."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tunevlseg.data.sources.common import find_dir, require
from tunevlseg.data.spec import DatasetSpec, SourceFile

log = logging.getLogger(__name__)

STRUCTURES = {1: "left ventricle", 2: "myocardium", 3: "left atrium"}
VIEWS = {"2CH": "two-chamber view", "4CH": "four-chamber view"}
PHASES = {"ED": "end-diastole", "ES": "end-systole"}
SPLIT_FILES = {"train": "subgroup_training.txt", "val": "subgroup_validation.txt", "test": "subgroup_testing.txt"}


def official_split(root: Path) -> dict[str, str]:
    """Patient -> split from ``database_split/subgroup_*.txt`` (in the main zip or the separate
    ``database_split.zip``); empty when absent."""
    try:
        folder = find_dir(root, "database_split", "CAMUS")
    except ValueError:
        log.warning("CAMUS: no database_split/ folder (database_split.zip); splitting patients with the seed")
        return {}
    out = {}
    for split, name in SPLIT_FILES.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CAMUS: split file {path} missing")
        for line in path.read_text().split():
            out[line.strip()] = split
    return out


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}{,_gt}.nii.gz`` × labels 1, 2, 3.

    Frames are stored (columns, rows): ``transpose`` = 1 puts them upright.
    The half sequences, ``Info_*.cfg`` and ``MANDATORY_CITATION.md`` beside
    the frames are not used (the benchmark segments ED/ES frames).
    """
    base = find_dir(root, "database_nifti", "CAMUS")
    split_of = official_split(root)
    rows = []
    for patient in require(sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("patient")),
                           base, "patient folders"):
        if split_of and patient.name not in split_of:
            raise ValueError(f"CAMUS: {patient.name} is in no database_split/subgroup_*.txt file")
        for view, view_words in VIEWS.items():
            for phase, phase_words in PHASES.items():
                stem = f"{patient.name}_{view}_{phase}"
                image, gt = patient / f"{stem}.nii.gz", patient / f"{stem}_gt.nii.gz"
                for path in (image, gt):
                    if not path.is_file():
                        raise FileNotFoundError(f"CAMUS: missing {path}")
                for label, phrase in STRUCTURES.items():
                    rows.append({"id": f"{stem}_{label}", "image": str(image), "mask": str(gt), "phrase": phrase,
                                 "group": patient.name, "label": label, "transpose": 1,
                                 "split": split_of.get(patient.name, ""),
                                 "context": f"{view_words} at {phase_words}"})
    return rows


def published_id(record: dict) -> str | None:
    """medvlsm: ``patient0001_2CH_ED.png`` + ``mask_<label>/patient0001_2CH_ED_gt.png`` -> ``patient0001_2CH_ED_<label>``."""
    m = re.match(r"^mask_(\d)/", (record.get("mask_name") or "").replace("\\", "/"))
    return f"{Path(record['img_name']).stem}_{m.group(1)}" if m else None


SPEC = DatasetSpec(
    id="camus",
    title="CAMUS (public NIfTI release)",
    access="gated",
    files=(SourceFile("CAMUS_public.zip"), SourceFile("database_split.zip", optional=True)),
    homepage="https://humanheart-project.creatis.insa-lyon.fr/database/#collection/6373703d73e9f0047faa1bc8",
    instructions=("Register (free) on the CREATIS Human Heart database, open the CAMUS collection and download "
                  "the CAMUS_public folder as CAMUS_public.zip (database_nifti/); the official patient split "
                  "database_split/ comes as a separate database_split.zip: put it beside."),
    phrases="left ventricle (1), myocardium (2), left atrium (3)",
    split_rule="official database_split/subgroup_{training,validation,testing}.txt patients (400/50/50); "
               "seeded by patient if absent",
    prompt_context="view and phase, e.g. 'two-chamber view at end-diastole'",
    prepare={"window": [0, 255]},
    index=index,
    published_id=published_id,
)
