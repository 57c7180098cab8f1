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
