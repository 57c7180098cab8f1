"""Helpers shared by the raw readers: locating release folders, listing files, present labels."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np

from tunevlseg.data.masks import label_image


def find_dir(root: Path, relpath: str, what: str) -> Path:
    """The folder ``relpath`` (e.g. ``Kvasir-SEG/images``) at any depth under ``root``.

    Raises ``ValueError`` naming ``root`` and the expected folder when it is
    missing (an empty or wrong archive).
    """
    root = Path(root)
    last = Path(relpath).name
    found = [c for c in root.rglob(last) if c.is_dir() and c.as_posix().endswith("/" + relpath)]
    if (root / relpath).is_dir():
        found.append(root / relpath)
    if found:  # the deepest: an extraction folder may carry the same name as the release's top folder
        return max(found, key=lambda c: (len(c.parts), c.as_posix()))
    raise ValueError(f"{root}: no folder {relpath!r} found; is this the {what} release?")


def find_file(root: Path, name: str, what: str, required: bool = True) -> Path | None:
    """The first file called ``name`` under ``root`` (``ValueError`` naming it when required and missing)."""
    for cand in sorted(Path(root).rglob(name)):
        if cand.is_file():
            return cand
    if required:
        raise ValueError(f"{root}: no file {name!r} found; is this the {what} release?")
    return None


def files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files in ``folder`` (not recursive) with one of ``suffixes`` (case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def require(items: list, root: Path, what: str) -> list:
    """``items`` unless empty (then ``ValueError``: the archive holds no samples)."""
    if not items:
        raise ValueError(f"{root}: no {what} found (empty or wrong archive?)")
    return items


def paired_rows(root: Path, image_dir: str, mask_dir: str, what: str, *, image_suffixes: tuple[str, ...],
                phrase: str, id_prefix: str = "", mask_suffix: str | None = None, mask_rule: str | None = None
                ) -> list[dict]:
    """Rows for releases with an image folder and a mask folder of the same stems.

    The mask of ``<stem><ext>`` is ``<stem><mask_suffix>`` (default: the image's own file name);
    a missing mask fails naming the image and the expected file.
    """
    images = find_dir(root, image_dir, what)
    masks = find_dir(root, mask_dir, what)
    rows = []
    for img in require(files(images, image_suffixes), images, "images"):
        mask = masks / (img.name if mask_suffix is None else img.stem + mask_suffix)
        if not mask.is_file():
            raise FileNotFoundError(f"{what}: image {img} has no mask {mask}")
        row = {"id": f"{id_prefix}{img.stem}", "image": str(img), "mask": str(mask), "phrase": phrase,
               "group": img.stem}
        if mask_rule:
            row["mask_rule"] = mask_rule
        rows.append(row)
    return rows


def _labels_of(path: str) -> list[int]:
    return np.unique(label_image(Path(path))).tolist()


def present_labels(paths: list[Path], workers: int = 1) -> list[list[int]]:
    """Label values present in each label image (parallel over ``workers`` processes)."""
    args = [str(p) for p in paths]
    if workers > 1 and len(args) > 64:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            return pool.map(_labels_of, args, chunksize=16)
    return [_labels_of(a) for a in args]


# ---------------------------------------------------------------- the user's own data (folder, datalist, nnunet)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_SUFFIXES = (".nii.gz", ".nii")
MONAI_SPLITS = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test",
                "testing": "test"}


def name_stem(path: str | Path) -> str:
    """The file name without its image or volume extension (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES + IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def group_of(stem: str, pattern: str | None, where: str) -> str:
    """The group (patient, sequence) of a sample: the first capture group (else the whole match) of
    ``pattern`` searched in ``stem``; the stem itself without a pattern. ``ValueError`` naming the
    file and the pattern when it does not match."""
    if not pattern:
        return stem
    import re

    m = re.search(pattern, stem)
    if not m:
        raise ValueError(f"{where}: group pattern {pattern!r} does not match {stem!r}")
    return m.group(1) if m.groups() else m.group(0)


def read_table(path: str | Path, key: str, columns: tuple[str, ...], where: str) -> dict[str, dict]:
    """A CSV with a ``key`` column (a file name or stem) as ``{stem: row}``; errors name the file and key."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {path} not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (key, *columns) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{where}: {path} lacks column(s) {missing} (has {reader.fieldnames})")
        return {name_stem(r[key]): r for r in reader}


def check_split(value: str, where: str) -> str:
    """A split name (train/val/test, or MONAI's training/validation/testing) as train/val/test ('' stays '')."""
    value = (value or "").strip()
    if value and value.lower() not in MONAI_SPLITS:
        raise ValueError(f"{where}: split {value!r} is not one of train, val, test")
    return MONAI_SPLITS.get(value.lower(), "")


def label_rows(case: str, image: str, mask: str, labels: dict[str, int], phrase: str | None, group: str,
               volume: bool, **extra) -> list[dict]:
    """One row per (image, label) of a label map: ``label`` column for NIfTI pairs, ``label:V`` rule otherwise.

    One label keeps the case's name as id; several add the label name (one sample per class, as for VOC).
    Volume rows also get ``extra`` columns (``axis``, ``spacing``).
    The phrase is ``phrase`` when given (one label), else the label's name with ``_`` as spaces.
    """
    rows = []
    for name, value in labels.items():
        row = {"id": case if len(labels) == 1 else f"{case}_{name}", "image": image, "mask": mask,
               "phrase": phrase or name.replace("_", " "), "group": group}
        if volume:
            row.update(label=value, orient="canonical", case=row["id"], **extra)
        else:
            row["mask_rule"] = f"label:{value}"
        rows.append(row)
    return rows


def canonical_spacing(path: str | Path, axis: int) -> str:
    """Voxel spacing of a NIfTI file in the canonical (RAS+) axis order, read from its header only:
    ``"rows x columns x slice"`` in mm for slices cut along ``axis`` (e.g. ``"0.8x0.8x2.5"``)."""
    import nibabel as nib

    img = nib.load(str(path))
    zooms = img.header.get_zooms()[:3]
    ornt = nib.io_orientation(img.affine)
    canonical = [0.0] * len(zooms)
    for i, (j, _) in enumerate(ornt[: len(zooms)]):
        canonical[int(j)] = float(zooms[i])
    order = [a for a in range(len(canonical)) if a != axis] + [axis]
    return "x".join(f"{canonical[a]:g}" for a in order if a < len(canonical))
