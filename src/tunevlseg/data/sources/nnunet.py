"""``source: nnunet``: an nnU-Net v2 raw dataset (``dataset.json``, ``imagesTr/``, ``labelsTr/``, optional
``imagesTs/`` + ``labelsTs/``), 2-D (png, tif, ...) or 3-D (``.nii.gz``), with config only.

Config keys: ``path`` (the ``DatasetXXX_Name`` folder); optional ``label`` (a label name of
dataset.json, or a list of them: one sample per (image, label), as for VOC; default every label but
background), ``phrase`` (one label: the class phrase; default the label's name), ``channel`` (the
channel file ``_XXXX`` used as the image, by index or by its name in ``channel_names``; default 0),
``group`` (regex on the case id: cases of one patient stay in one split), and for 3-D ``axis`` (slicing
axis of the volume after reorientation to the closest canonical RAS+ orientation: 0 sagittal,
1 coronal, 2 axial; default 2) and ``empty_slice_fraction`` (slices without the label that are kept,
seeded; default 0.1, 1 keeps every slice).

Cases of ``imagesTr`` are split by seed (by case or ``group``); with ``labelsTs`` the test cases form
the test split and validation is carved from the training cases. Every slice of a case stays in the
case's split; the prepared manifest names the case (``case``) and its voxel spacing (``spacing``),
so the test Dice is also reported per volume.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tunevlseg.data.sources.common import VOLUME_SUFFIXES, canonical_spacing, group_of, label_rows

KEYS = ("path", "label", "phrase", "channel", "group", "axis")
REQUIRED = ("path",)


def read_dataset_json(root: Path, where: str) -> dict:
    path = root / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{where}.path: {root} has no dataset.json (is it an nnU-Net v2 raw dataset?)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}.path: {path} is not valid JSON ({e})") from e
    for key in ("labels", "file_ending"):
        if key not in meta:
            raise ValueError(f"{where}.path: {path} lacks {key!r}")
    return meta


def chosen_labels(meta: dict, cfg: dict, where: str) -> dict[str, int]:
    """``{name: value}`` of the configured label(s); ``ValueError`` listing dataset.json's labels."""
    labels = {str(k): v for k, v in meta["labels"].items()}
    wanted = cfg.get("label") or [k for k, v in labels.items() if v != 0]
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    out = {}
    for name in wanted:
        if name not in labels:
            raise ValueError(f"{where}.label: {name!r} is not a label of dataset.json; its labels: "
                             f"{sorted(labels)}")
        if not isinstance(labels[name], int) or isinstance(labels[name], bool):
            raise ValueError(f"{where}.label: {name!r} is a region ({labels[name]}); name a plain label")
        out[name] = labels[name]
    if cfg.get("phrase") and len(out) > 1:
        raise ValueError(f"{where}.phrase: one phrase for {len(out)} labels; the label names are the phrases")
    return out


def channel_index(meta: dict, channel, where: str) -> int:
    names = {str(v): int(k) for k, v in (meta.get("channel_names") or {}).items()}
    if isinstance(channel, str) and not channel.isdigit():
        if channel not in names:
            raise ValueError(f"{where}.channel: {channel!r} is not a channel of dataset.json; channels: "
                             f"{sorted(names)}")
        return names[channel]
    return int(channel)


def cases(images: Path, ending: str, channel: int, where: str) -> dict[str, Path]:
    """``{case: the channel's image file}`` in ``images`` (``{case}_{XXXX}{file_ending}``)."""
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(images.iterdir()):
        m = pattern.match(p.name)
        if m and p.is_file():
            found.setdefault(m.group(1), {})[int(m.group(2))] = p
    if not found:
        raise ValueError(f"{where}: no images named CASE_XXXX{ending} in {images}")
    missing = [c for c, chans in found.items() if channel not in chans]
    if missing:
        raise FileNotFoundError(f"{where}.channel: case {missing[0]} has no channel {channel} file "
                                f"{images / f'{missing[0]}_{channel:04d}{ending}'}")
    return {c: chans[channel] for c, chans in found.items()}


def index(cfg: dict, where: str) -> list[dict]:
    """samples.csv rows: one per (case, label), 3-D cases as volume rows (sliced by prepare)."""
    root = Path(cfg["path"]).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{where}.path: folder {root} does not exist")
    meta = read_dataset_json(root, where)
    ending, labels = meta["file_ending"], chosen_labels(meta, cfg, where)
    channel = channel_index(meta, cfg.get("channel", 0), where)
    volume, axis = ending.lower() in VOLUME_SUFFIXES, int(cfg.get("axis", 2))
    parts = [("imagesTr", "labelsTr", "train")]
    if (root / "labelsTs").is_dir() and (root / "imagesTs").is_dir():
        parts.append(("imagesTs", "labelsTs", "test"))
    rows = []
    for images, labels_dir, split in parts:
        if not (root / images).is_dir():
            raise FileNotFoundError(f"{where}.path: {root} has no {images}/ folder")
        for case, image in cases(root / images, ending, channel, f"{where} ({images})").items():
            mask = root / labels_dir / f"{case}{ending}"
            if not mask.is_file():
                raise FileNotFoundError(f"{where}: case {case} ({image}) has no label file {mask}")
            extra = {"axis": axis, "spacing": canonical_spacing(image, axis)} if volume else {}
            for row in label_rows(case, str(image.resolve()), str(mask.resolve()), labels, cfg.get("phrase"),
                                  group_of(case, cfg.get("group"), f"{where}.group ({image})"), volume, **extra):
                if len(parts) > 1:
                    row["split"] = split
                rows.append(row)
    return rows


def inputs(cfg: dict) -> list[str]:
    """dataset.json and the image/label folders (a changed file list reruns index and prepare)."""
    root = Path(cfg["path"]).expanduser()
    return [str(root / "dataset.json")] + [str(root / d) for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
                                           if (root / d).is_dir()]
