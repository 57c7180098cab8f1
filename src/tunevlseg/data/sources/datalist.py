"""``source: datalist``: a CSV or JSON list of (image, label) pairs, MONAI datalist style (config only).

Config keys: ``path`` (the list), optional ``base`` (folder that relative paths start from; default
the list's folder), ``phrase`` (the class phrase where an entry has none), ``mask_rule`` (as for
``source: folder``), ``group`` (regex on the image stem), ``channel`` (which file of an entry whose
``image`` is a list of channel files; default 0), and for NIfTI volumes ``label`` (value of the
target in the label map, default 1), ``axis`` (slicing axis of the canonical RAS+ volume, default 2).

- JSON: ``{"training": [...], "validation": [...], "test": [...]}`` (MONAI; the key is the split)
  or a plain list ``[{"image": ..., "label": ..., "split"?: ..., "phrase"?: ..., "group"?: ...}]``.
- CSV: columns ``image``, ``label`` (or ``mask``), optional ``split``, ``phrase``, ``group``.

Entries without a label cannot be scored and are refused (naming the entry). When the list
names train and validation entries but no test, the validation entries become the test split
and a validation split is carved from training (``val_fraction``), so validation and test stay apart.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from tunevlseg.data.sources.common import (MONAI_SPLITS, VOLUME_SUFFIXES, canonical_spacing, check_split, group_of,
                                           name_stem)

log = logging.getLogger(__name__)

KEYS = ("path", "base", "phrase", "mask_rule", "group", "channel", "label", "axis")
REQUIRED = ("path",)


def _entries(path: Path, where: str) -> list[dict]:
    """The list's entries as dicts with ``image``, ``label`` and optional ``split``, ``phrase``, ``group``."""
    if not path.is_file():
        raise FileNotFoundError(f"{where}.path: datalist {path} does not exist")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = [{k: v for k, v in r.items() if v not in (None, "")} for r in csv.DictReader(f)]
        for r in rows:
            if "label" not in r and "mask" in r:
                r["label"] = r.pop("mask")
        return rows
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}.path: {path} is not valid JSON ({e})") from e
    if isinstance(data, list):
        return data
    if not isinstance(data, dict) or not set(data) & set(MONAI_SPLITS):
        raise ValueError(f"{where}.path: {path} is neither a list of entries nor a MONAI datalist with "
                         f"{sorted(MONAI_SPLITS)} keys")
    return [{**e, "split": key} for key, part in data.items() if key in MONAI_SPLITS for e in part]


def _resolve(value, base: Path, channel: int, where: str) -> str:
    if isinstance(value, list):
        if channel >= len(value):
            raise ValueError(f"{where}: channel {channel} requested but the entry has {len(value)} image files")
        value = value[channel]
    p = Path(str(value)).expanduser()
    return str((p if p.is_absolute() else base / p).resolve())


def index(cfg: dict, where: str) -> list[dict]:
    """samples.csv rows of a datalist; errors name the list, the entry and what is wrong."""
    path = Path(cfg["path"]).expanduser()
    base = Path(cfg.get("base") or path.parent).expanduser()
    entries = _entries(path, where)
    if not entries:
        raise ValueError(f"{where}.path: datalist {path} has no entries")
    rows = []
    for i, e in enumerate(entries):
        at = f"{where}.path: {path} entry {i + 1}"
        if not isinstance(e, dict) or not e.get("image"):
            raise ValueError(f"{at} has no image")
        if not e.get("label"):
            raise ValueError(f"{at} ({e['image']}) has no label (mask): it cannot be scored")
        image = _resolve(e["image"], base, int(cfg.get("channel", 0)), at)
        mask = _resolve(e["label"], base, 0, at)
        stem = name_stem(image)
        phrase = e.get("phrase") or cfg.get("phrase")
        if not phrase:
            raise ValueError(f"{at}: no phrase (give datasets.<name>.phrase or a phrase per entry)")
        group = e.get("group") or group_of(stem, cfg.get("group"), f"{where}.group ({image})")
        row = {"id": stem, "image": image, "mask": mask, "phrase": phrase, "group": str(group),
               "split": check_split(str(e.get("split") or ""), at)}
        if image.lower().endswith(VOLUME_SUFFIXES):
            axis = int(cfg.get("axis", 2))
            row.update(label=int(cfg.get("label", 1)), orient="canonical", axis=axis, case=stem,
                       spacing=canonical_spacing(image, axis) if Path(image).is_file() else "")
        else:
            row["mask_rule"] = cfg.get("mask_rule") or ("threshold:127" if mask.lower().endswith((".jpg", ".jpeg"))
                                                        else "binary")
        rows.append(row)
    ids = [r["id"] for r in rows]
    if len(set(ids)) < len(ids):  # the same stem in two folders: number the entries
        for i, r in enumerate(rows):
            r["id"] = f"{i:05d}_{r['id']}"
            if "case" in r:
                r["case"] = r["id"]
    _relabel_splits(rows, path)
    return rows


def _relabel_splits(rows: list[dict], path: Path) -> None:
    """No test entries but validation ones: validation becomes test (val is then carved from train)."""
    given = {r["split"] for r in rows}
    if given == {""}:
        for r in rows:
            del r["split"]
        return
    if "" in given:
        raise ValueError(f"datalist {path}: some entries have a split and others none; give every entry one")
    if "test" not in given and "val" in given:
        log.warning("datalist %s: no test entries; the validation entries are the test split and validation "
                    "is carved from training", path)
        for r in rows:
            r["split"] = "test" if r["split"] == "val" else r["split"]


def inputs(cfg: dict) -> list[str]:
    """The list itself (a changed list reruns index and prepare)."""
    return [str(Path(cfg["path"]).expanduser())]
