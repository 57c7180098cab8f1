"""The user's own data in the layouts ``source: folder | datalist | nnunet`` read (tiny, known by construction).

Each builder writes files into ``dest`` and returns the dataset's config entry and the true mask of every
sample (sample id -> (H, W) {0,1}, at the image's original size; for volumes per slice of the canonical
(RAS+) volume cut along the configured axis).
"""

from __future__ import annotations


import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from tests.data_fixtures import H, W, _blob, _noise, _rgb

__all__ = ["build_datalist", "build_folder", "build_nnunet_2d", "build_nnunet_3d"]


def _save(path: Path, array: np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, fmt, **kw)
    return path


def _grey16(rng) -> np.ndarray:
    """A 16-bit grey image using 12 bits (a scanner's range stored in 16)."""
    return (_noise(rng, channels=1).astype(np.uint16) * 16 + rng.integers(0, 16, (H, W))).astype(np.uint16)


def build_folder(dest: Path, n: int = 12, seed: int = 0, layout: str = "png16") -> tuple[dict, dict]:
    """``images/`` + ``masks/``. Layouts: ``png16`` (16-bit grey PNG images, binary PNG masks named
    ``{stem}_mask``, two images per patient ``pNN_a``/``pNN_b``), ``jpeg`` (RGB JPEG images and RGB JPEG
    masks, same stems: the default rule thresholds them at 127), ``mixed`` (tif and bmp images, grey
    {0,1} PNG masks)."""
    rng = np.random.default_rng(seed)
    truth, cfg = {}, {"source": "folder", "images": str(dest / "images"), "masks": str(dest / "masks"),
                      "phrase": "polyp"}
    for i in range(n):
        mask = _blob(rng)
        if layout == "png16":
            stem = f"p{i // 2:02d}_{'ab'[i % 2]}"
            im = Image.fromarray(_grey16(rng))
            (dest / "images").mkdir(parents=True, exist_ok=True)
            im.save(dest / "images" / f"{stem}.png")
            _save(dest / "masks" / f"{stem}_mask.png", mask * 255)
        elif layout == "jpeg":
            stem = f"img{i:03d}"
            _save(dest / "images" / f"{stem}.jpg", _noise(rng), "JPEG", quality=90)
            _save(dest / "masks" / f"{stem}.jpg", _rgb(mask), "JPEG", quality=75)
        else:
            stem = f"frame{i:03d}"
            _save(dest / "images" / f"{stem}.{'tif' if i % 2 else 'bmp'}", _noise(rng))
            _save(dest / "masks" / f"{stem}.png", mask)
        truth[stem] = mask
    if layout == "png16":
        cfg.update(mask_pattern="{stem}_mask", group=r"^(p\d+)_")
    return cfg, truth


def build_datalist(dest: Path, n: int = 10, seed: int = 1, kind: str = "monai") -> tuple[dict, dict]:
    """PNG pairs under ``data/`` and a list: ``monai`` (JSON with training/validation/test keys, relative
    paths), ``csv`` (columns image,mask,phrase,group; absolute paths, no split)."""
    rng = np.random.default_rng(seed)
    truth, entries = {}, []
    for i in range(n):
        mask = _blob(rng)
        img = _save(dest / "data" / f"case{i:02d}.png", _noise(rng))
        lab = _save(dest / "data" / f"case{i:02d}_seg.png", mask * 255)
        truth[f"case{i:02d}"] = mask
        entries.append((img, lab, i))
    if kind == "monai":
        parts = {"training": entries[: n - 4], "validation": entries[n - 4: n - 2], "test": entries[n - 2:]}
        data = {k: [{"image": f"data/{e[0].name}", "label": f"data/{e[1].name}"} for e in v] for k, v in parts.items()}
        (dest / "datalist.json").write_text(json.dumps(data))
        return {"source": "datalist", "path": str(dest / "datalist.json"), "phrase": "lesion"}, truth
    lines = ["image,mask,phrase,group"] + [f"{a},{b},lesion,pat{i // 2}" for a, b, i in entries]
    (dest / "list.csv").write_text("\n".join(lines) + "\n")
    return {"source": "datalist", "path": str(dest / "list.csv")}, truth


def _dataset_json(dest: Path, labels: dict, ending: str, n: int, channels=("CT",)) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": labels, "numTraining": n,
        "file_ending": ending}))


def build_nnunet_2d(dest: Path, n: int = 8, seed: int = 2) -> tuple[dict, dict]:
    """``Dataset101_Fundus``: RGB PNG ``_0000`` images, PNG label maps 0/1/2 (disc, cup); truth per (case, label)."""
    rng = np.random.default_rng(seed)
    _dataset_json(dest, {"background": 0, "optic_disc": 1, "optic_cup": 2}, ".png", n, ("R", "G", "B"))
    truth = {}
    for i in range(n):
        disc = _blob(rng)
        labels = disc.copy()
        cup = np.zeros_like(disc)
        ys, xs = np.nonzero(disc)
        cy, cx = int(ys.mean()), int(xs.mean())
        cup[cy - 2: cy + 3, cx - 2: cx + 3] = 1
        labels[cup == 1] = 2
        _save(dest / "imagesTr" / f"fundus_{i:03d}_0000.png", _noise(rng))
        _save(dest / "labelsTr" / f"fundus_{i:03d}.png", labels.astype(np.uint8))
        truth[f"fundus_{i:03d}_optic_disc"] = (labels == 1).astype(np.uint8)
        truth[f"fundus_{i:03d}_optic_cup"] = cup
    return {"source": "nnunet", "path": str(dest)}, truth


def _ball(shape, rng) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    c = [rng.uniform(0.35, 0.65) * s for s in shape]
    r = [rng.uniform(0.18, 0.3) * s for s in shape]
    return (((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1).astype(np.uint8)


def build_nnunet_3d(dest: Path, n: int = 8, seed: int = 3, shape=(20, 16, 10), spacing=(0.8, 0.7, 2.5),
                    test_cases: int = 0) -> tuple[dict, dict]:
    """``Dataset017_Liver``: two channels (``_0000`` CT, ``_0001`` a decoy), labels 0 background,
    1 liver, 2 tumour; volumes stored in LPS orientation (x and y flipped vs RAS+), so only a reoriented
    reader gets the truth. Cases ``patNN_V`` (two per patient ``patNN``); ``test_cases`` more in imagesTs/
    labelsTs. Truth: per tumour-bearing axial slice of the canonical volume, ``<case>_sKK`` -> mask."""
    rng = np.random.default_rng(seed)
    _dataset_json(dest, {"background": 0, "liver": 1, "tumour": 2}, ".nii.gz", n, ("CT", "decoy"))
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS storage
    truth = {}
    for i in range(n + test_cases):
        tr = "Tr" if i < n else "Ts"
        case = f"pat{i // 2:02d}_{i % 2}"
        liver = _ball(shape, rng)
        tumour = liver & _ball(shape, rng)
        tumour[:, :, : shape[2] // 3] = 0  # tumour-free bottom slices: empty slices exist
        labels = liver + tumour  # 0, 1, 2
        ct = (rng.normal(40, 10, shape) + 60 * liver + 40 * tumour).astype(np.float32)
        for ch, vol in ((0, ct), (1, -ct)):
            out = dest / f"images{tr}" / f"{case}_{ch:04d}.nii.gz"
            out.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, affine), str(out))
        (dest / f"labels{tr}").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(dest / f"labels{tr}" / f"{case}.nii.gz"))
        canonical = (labels == 2)[::-1, ::-1, :]  # RAS+: flip x and y back
        for k in range(shape[2]):
            if canonical[..., k].any():
                truth[f"{case}_s{k:02d}"] = canonical[..., k].astype(np.uint8)
    cfg = {"source": "nnunet", "path": str(dest), "label": "tumour", "group": r"^(pat\d+)_"}
    return cfg, truth



