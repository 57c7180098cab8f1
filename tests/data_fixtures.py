"""Miniature releases of the ten real datasets, in their REAL raw layouts.

Each builder writes the archive(s) a user would download (same file and folder
names, image formats and label encodings) into ``dest`` and returns a
:class:`Fixture`: the archives, how many samples the pipeline must produce,
the official split sizes where the dataset has them, and the true binary mask
of every sample (known by construction) to compare with what the pipeline
derives, the group each sample must end in (patients, video sequences, and
pixel-identical copies merged), and the duplicate pairs planted the way the
real releases have them. ``n`` scales the number of images (the bench uses
thousands). :func:`medvlsm_names` gives each sample's file names in the
published medvlsm annotation files.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw

W, H = 40, 32  # non-square on purpose: transposes and size checks must show


@dataclass
class Fixture:
    archives: list[Path]
    n_samples: int
    official: dict[str, int] | None = None  # split -> samples fixed by the release
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # sample id -> (H, W) {0,1}
    groups: dict[str, str] = field(default_factory=dict)  # sample id -> its group in the manifest (never spans splits)
    image_of: dict[str, str] = field(default_factory=dict)  # sample id -> archive member of its image
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # pixel-identical image pairs (sample ids)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # ... of which the masks differ


def _rng(seed):
    return np.random.default_rng(seed)


def _noise(rng, h=None, w=None, channels=3) -> np.ndarray:
    """Random image, smooth with fine grain (compresses like a photo): unique per call (the leak audit hashes pixels)."""
    h, w = h or H, w or W
    coarse = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), channels), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse).resize((w, h), Image.BILINEAR))
    grain = rng.integers(-8, 9, smooth.shape)
    return np.clip(smooth.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def _blob(rng, h=None, w=None) -> np.ndarray:
    """A random filled ellipse, (h, w) {0,1}."""
    h, w = h or H, w or W
    im = Image.new("L", (w, h), 0)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    rx, ry = rng.uniform(0.12, 0.25) * w, rng.uniform(0.12, 0.25) * h
    ImageDraw.Draw(im).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1)
    return np.array(im, np.uint8)


def _encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def _rgb(mask01: np.ndarray) -> np.ndarray:
    """A {0,1} mask as an RGB {0,255} image (masks saved in colour, as several releases do)."""
    return np.repeat((mask01 * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _soft_blob(rng, h=None, w=None) -> np.ndarray:
    """A blob drawn at 4x and box-downsampled: 0/255 inside/outside, anti-aliased grey values on the edge."""
    h, w = h or H, w or W
    big = Image.fromarray(_blob(rng, 4 * h, 4 * w) * 255)
    return np.asarray(big.resize((w, h), Image.Resampling.BOX))


def _tif_rgb_minisblack(rgb: np.ndarray) -> bytes:
    """An uncompressed TIFF of RGB samples tagged PhotometricInterpretation = MinIsBlack (ClinicDB's TIF/):
    three samples per pixel with a grey photometric, which Pillow refuses to open."""
    h, w, _ = rgb.shape
    data = rgb.tobytes()
    n, ifd = 10, 8
    bps = ifd + 2 + n * 12 + 4
    start = bps + 6
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bps), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, start),
            (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    out = b"II*\x00" + struct.pack("<IH", ifd, n)
    for tag, kind, count, value in tags:
        out += struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == 3 and count == 1 else \
            struct.pack("<HHII", tag, kind, count, value)
    return out + struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8) + data


def _palette_png(labels: np.ndarray) -> bytes:
    im = Image.fromarray(labels.astype(np.uint8), "P")
    pal = []
    for i in range(256):  # the VOC colour map (bit-interleaved)
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    im.putpalette(pal)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _gz(img) -> bytes:
    """A NIfTI image as .nii.gz bytes."""
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=1)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# ---------------------------------------------------------------- polyp / lesion / ulcer: image + mask pairs


def build_kvasir(dest: Path, n: int = 20, seed: int = 0) -> Fixture:
    """``kvasir-seg.zip``: Kvasir-SEG/{images,masks}/<id>.jpg (masks: RGB JPEGs) + Kvasir-SEG/kavsir_bboxes.json."""
    rng, members, fx, boxes = _rng(seed), {}, Fixture([], n), {}
    for i in range(n):
        sid = f"cju{i:04d}kvasir{rng.integers(1e6):06d}"
        mask = _blob(rng)
        members[f"Kvasir-SEG/images/{sid}.jpg"] = _encode(_noise(rng), "JPEG", quality=90)
        members[f"Kvasir-SEG/masks/{sid}.jpg"] = _encode(_rgb(mask), "JPEG", quality=75)
        ys, xs = np.nonzero(mask)
        boxes[sid] = {"height": H, "width": W, "bbox": [{"label": "polyp", "xmin": int(xs.min()), "ymin": int(ys.min()),
                                                        "xmax": int(xs.max()), "ymax": int(ys.max())}]}
        fx.truth[sid], fx.groups[sid], fx.image_of[sid] = mask, sid, f"Kvasir-SEG/images/{sid}.jpg"
    members["Kvasir-SEG/kavsir_bboxes.json"] = json.dumps(boxes).encode()
    fx.archives = [_zip(dest / "kvasir-seg.zip", members)]
    return fx


CLINICDB_FRAMES = (1, 2, 3, 26, 27, 51, 68, 79, 80, 104, 127, 152, 178, 200, 206)  # 11 of the 29 sequences


def build_clinicdb(dest: Path, frames=CLINICDB_FRAMES, seed: int = 1, metadata: bool = True) -> Fixture:
    """Kaggle ``archive.zip``: PNG/Original/<n>.png + PNG/Ground Truth/<n>.png, TIF/ copies Pillow cannot open
    (RGB tagged MinIsBlack), metadata.csv with sequence_id.

    Frames of one sequence are near-duplicates (one scene + fresh grain); masks
    are RGB PNGs with anti-aliased grey edges (truth: grey > 127).
    """
    from tunevlseg.data.sources.clinicdb import sequence_of

    rng, members, fx = _rng(seed), {}, Fixture([], len(frames))
    scenes: dict[int, np.ndarray] = {}
    lines = ["png_image_path,tif_image_path,png_mask_path,tif_mask_path,sequence_id"]
    for i in frames:
        seq = sequence_of(i)
        scene = scenes.setdefault(seq, _noise(rng).astype(np.int16))
        image = np.clip(scene + rng.integers(-6, 7, scene.shape), 0, 255).astype(np.uint8)
        soft = _soft_blob(rng)
        members[f"PNG/Original/{i}.png"] = _encode(image, "PNG")
        members[f"PNG/Ground Truth/{i}.png"] = _encode(np.repeat(soft[..., None], 3, axis=-1), "PNG")
        members[f"TIF/Original/{i}.tif"] = _tif_rgb_minisblack(image)
        members[f"TIF/Ground Truth/{i}.tif"] = _tif_rgb_minisblack(np.repeat(soft[..., None], 3, axis=-1))
        lines.append(f"PNG/Original/{i}.png,TIF/Original/{i}.tif,PNG/Ground Truth/{i}.png,TIF/Ground Truth/{i}.tif,{seq}")
        sid = f"clinicdb_{i}"
        fx.truth[sid], fx.groups[sid], fx.image_of[sid] = (soft > 127).astype(np.uint8), f"seq{seq:02d}", \
            f"PNG/Original/{i}.png"
    if metadata:
        members["metadata.csv"] = ("\n".join(lines) + "\n").encode()
    fx.archives = [_zip(dest / "archive.zip", members)]
    return fx


BKAI_W = 1280  # real frames: 1280 wide, 959-1024 high


def build_bkai(dest: Path, n: int = 20, seed: int = 2) -> Fixture:
    """``bkai-igh-neopolyp.zip``: train/train/<hex>.jpeg, train_gt/train_gt/<hex>.jpeg, test/test (no masks).

    Masks are noisy RGB JPEGs (red neoplastic, green non-neoplastic; every
    third has both) of heights 959-1024. Images 3 and 7 are pixel-identical
    copies of images 0 and 4 (other bytes: a JPEG comment), with the same masks.
    """
    rng, members, fx = _rng(seed), {}, Fixture([], n)
    copies = {3: 0, 7: 4}
    encoded: dict[int, tuple[bytes, bytes, np.ndarray, str]] = {}
    for i in range(n):
        name = f"{rng.integers(16**12):012x}"
        h = (959, 1024, 991, 1010)[i % 4]
        if i in copies:
            image, gt, truth, first = encoded[copies[i]]
            image = image[:2] + b"\xff\xfe\x00\x0ecopy of " + first[:4].encode() + image[2:]  # COM segment
            fx.duplicates.append((f"bkai_{first}", f"bkai_{name}"))
        else:
            red, green = _blob(rng, h, BKAI_W), _blob(rng, h, BKAI_W)
            green[red > 0] = 0
            rgb = np.zeros((h, BKAI_W, 3), np.uint8)
            if i % 3 != 2:
                rgb[red > 0] = (255, 0, 0)  # neoplastic
            if i % 3 != 1:
                rgb[green > 0] = (0, 255, 0)  # non-neoplastic
            truth = (rgb.max(-1) > 0).astype(np.uint8)
            image = _encode(_noise(rng, h, BKAI_W), "JPEG")
            gt = _encode(rgb, "JPEG", quality=75)
            first = name
        encoded[i] = (image, gt, truth, name)
        members[f"train/train/{name}.jpeg"] = image
        members[f"train_gt/train_gt/{name}.jpeg"] = gt
        sid = f"bkai_{name}"
        fx.truth[sid], fx.groups[sid], fx.image_of[sid] = truth, name, f"train/train/{name}.jpeg"
    for a, b in fx.duplicates:
        fx.groups[a] = fx.groups[b] = min(a, b)[len("bkai_"):]
    members["test/test/ffffffffffff.jpeg"] = _encode(_noise(rng), "JPEG")
    fx.archives = [_zip(dest / "bkai-igh-neopolyp.zip", members)]
    return fx


def build_isic2016(dest: Path, n: int = 10, n_test: int = 4, seed: int = 3) -> Fixture:
    """The four ISBI2016_ISIC_Part1_{Training,Test}_{Data,GroundTruth}.zip archives."""
    rng, fx = _rng(seed), Fixture([], n + n_test, official={"test": n_test})
    k = 0
    for part, count in (("Training", n), ("Test", n_test)):
        data, truth = {}, {}
        for _ in range(count):
            sid = f"ISIC_{k:07d}"
            k += 1
            mask = _blob(rng)
            data[f"ISBI2016_ISIC_Part1_{part}_Data/{sid}.jpg"] = _encode(_noise(rng), "JPEG")
            truth[f"ISBI2016_ISIC_Part1_{part}_GroundTruth/{sid}_Segmentation.png"] = _encode(mask * 255, "PNG")
            fx.truth[sid], fx.groups[sid] = mask, sid
            fx.image_of[sid] = f"ISBI2016_ISIC_Part1_{part}_Data/{sid}.jpg"
        fx.archives.append(_zip(dest / f"ISBI2016_ISIC_Part1_{part}_Data.zip", data))
        fx.archives.append(_zip(dest / f"ISBI2016_ISIC_Part1_{part}_GroundTruth.zip", truth))
    return fx


def build_dfu2022(dest: Path, n: int = 20, seed: int = 4) -> Fixture:
    """``DFUC2022_train_release.zip``: DFUC2022_train_images/<n>.jpg + DFUC2022_train_masks/<n>.png."""
    rng, members, fx = _rng(seed), {}, Fixture([], n)
    for i in range(n):
        stem = f"{100001 + i}"
        mask = _blob(rng)
        members[f"DFUC2022_train_release/DFUC2022_train_images/{stem}.jpg"] = _encode(_noise(rng), "JPEG")
        members[f"DFUC2022_train_release/DFUC2022_train_masks/{stem}.png"] = _encode(mask * 255, "PNG")
        sid = f"dfu_{stem}"
        fx.truth[sid], fx.groups[sid] = mask, stem
        fx.image_of[sid] = f"DFUC2022_train_release/DFUC2022_train_images/{stem}.jpg"
    fx.archives = [_zip(dest / "DFUC2022_train_release.zip", members)]
    return fx


def build_busi(dest: Path, n: int = 10, seed: int = 5) -> Fixture:
    """Kaggle ``archive.zip``: Dataset_BUSI_with_GT/{benign,malignant,normal}/<c> (<k>).png + _mask[_1].png.

    Every third tumour image has a second mask (``_mask_1.png``, OR-merged);
    normal images have an all-black mask, except one that has none. Masks
    cycle through the release's encodings: 8-bit grey, 1-bit, RGB, RGBA with
    alpha 255. ``malignant (2)`` is pixel-identical to ``benign (4)`` (other
    PNG bytes) with a different mask, like benign (433) / malignant (145).
    """
    rng, members, fx = _rng(seed), {}, Fixture([], 3 * n)
    k_mask = 0

    def encode_mask(mask01: np.ndarray) -> bytes:
        nonlocal k_mask
        k_mask += 1
        kind = k_mask % 4
        if kind == 1:
            return _encode(mask01.astype(bool), "PNG")  # mode "1"
        if kind == 2:
            return _encode(_rgb(mask01), "PNG")
        if kind == 3:
            return _encode(np.dstack([_rgb(mask01), np.full(mask01.shape, 255, np.uint8)]), "PNG")  # RGBA
        return _encode(mask01 * 255, "PNG")

    images: dict[str, np.ndarray] = {}
    for cls in ("benign", "malignant", "normal"):
        for k in range(1, n + 1):
            base = f"Dataset_BUSI_with_GT/{cls}/{cls} ({k})"
            sid = f"{cls}_{k:04d}"
            if (cls, k) == ("malignant", 2):
                image = images["benign_0004"]
                members[f"{base}.png"] = _encode(image, "PNG", compress_level=1)
                mask = np.roll(fx.truth["benign_0004"], 2, axis=1)  # the same lesion outlined differently
                members[f"{base}_mask.png"] = encode_mask(mask)
                fx.duplicates.append(("benign_0004", sid))
                fx.conflicts.append(("benign_0004", sid))
            else:
                image = images[sid] = _noise(rng, channels=1)
                members[f"{base}.png"] = _encode(image, "PNG")
                if cls == "normal":
                    mask = np.zeros((H, W), np.uint8)
                    if k != n:
                        members[f"{base}_mask.png"] = encode_mask(mask)
                else:
                    mask = _blob(rng)
                    members[f"{base}_mask.png"] = encode_mask(mask)
                    if k % 3 == 0:
                        extra = _blob(rng)
                        members[f"{base}_mask_1.png"] = encode_mask(extra)
                        mask = mask | extra
            fx.truth[sid], fx.groups[sid], fx.image_of[sid] = mask, sid, f"{base}.png"
    fx.groups["malignant_0002"] = "benign_0004"
    fx.archives = [_zip(dest / "archive.zip", members)]
    return fx


# ---------------------------------------------------------------- CAMUS: NIfTI frames, 4-label masks, official split


CAMUS_CITATION = b"# Mandatory citation\nS. Leclerc et al., IEEE TMI 38(9), 2019.\n"


def build_camus(dest: Path, n: int = 6, seed: int = 6, split_zip: bool = True) -> Fixture:
    """``CAMUS_public.zip`` (database_nifti/patientNNNN/*.nii.gz + half sequences, Info_*.cfg,
    MANDATORY_CITATION.md) and the official split as a separate ``database_split.zip``.

    Frames are stored as NIfTI (columns, rows) = (W, H) like the release;
    labels 0 background, 1 LV cavity, 2 myocardium, 3 left atrium. Patients
    are split train/val/test = n-2/1/1 by the subgroup files.
    """
    rng, members, fx = _rng(seed), {}, Fixture([], n * 12)
    patients = [f"patient{p:04d}" for p in range(1, n + 1)]
    split = {p: ("train" if i < n - 2 else "val" if i == n - 2 else "test") for i, p in enumerate(patients)}
    fx.official = {s: 12 * sum(v == s for v in split.values()) for s in ("train", "val", "test")} if split_zip else None
    yy, xx = np.mgrid[0:H, 0:W]
    members["CAMUS_public/MANDATORY_CITATION.md"] = CAMUS_CITATION
    members["CAMUS_public/database_nifti/MANDATORY_CITATION.md"] = CAMUS_CITATION
    for p in patients:
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                cx, cy = rng.uniform(0.4, 0.6) * W, rng.uniform(0.3, 0.45) * H
                r = ((xx - cx) / (0.18 * W)) ** 2 + ((yy - cy) / (0.2 * H)) ** 2
                labels = np.zeros((H, W), np.uint8)
                labels[r < 2.0] = 2  # myocardium ring
                labels[r < 1.0] = 1  # cavity
                atrium = ((xx - cx) / (0.15 * W)) ** 2 + ((yy - (cy + 0.35 * H)) / (0.12 * H)) ** 2 < 1
                labels[atrium & (labels == 0)] = 3
                image = _noise(rng, channels=1)
                stem = f"{p}_{view}_{phase}"
                members[f"CAMUS_public/database_nifti/{p}/{stem}.nii.gz"] = _gz(nib.Nifti1Image(image.T.copy(), np.eye(4)))
                members[f"CAMUS_public/database_nifti/{p}/{stem}_gt.nii.gz"] = _gz(nib.Nifti1Image(labels.T.copy(), np.eye(4)))
                for label in (1, 2, 3):
                    sid = f"{stem}_{label}"
                    fx.truth[sid], fx.groups[sid] = (labels == label).astype(np.uint8), p
                    fx.image_of[sid] = f"CAMUS_public/database_nifti/{p}/{stem}.nii.gz"
            seq = np.zeros((W, H, 3), np.uint8)
            members[f"CAMUS_public/database_nifti/{p}/{p}_{view}_half_sequence.nii.gz"] = _gz(nib.Nifti1Image(seq, np.eye(4)))
            members[f"CAMUS_public/database_nifti/{p}/{p}_{view}_half_sequence_gt.nii.gz"] = _gz(nib.Nifti1Image(seq, np.eye(4)))
            members[f"CAMUS_public/database_nifti/{p}/Info_{view}.cfg"] = (
                "ED: 1\nES: 3\nNbFrame: 3\nSex: F\nAge: 50\nImageQuality: Good\nEF: 55.3\nFrameRate: 50.0\n").encode()
    fx.archives = [_zip(dest / "CAMUS_public.zip", members)]
    if split_zip:
        split_members = {"database_split/MANDATORY_CITATION.md": CAMUS_CITATION}
        for s, name in (("train", "training"), ("val", "validation"), ("test", "testing")):
            split_members[f"database_split/subgroup_{name}.txt"] = "".join(
                f"{p}\n" for p in patients if split[p] == s).encode()
        fx.archives.append(_zip(dest / "database_split.zip", split_members))
    return fx


# ---------------------------------------------------------------- CheXlocalize: JSON polygons per pathology


CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
                   "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,"
                   "Pleural Other,Fracture,Support Devices")


def build_chexlocalize(dest: Path, n: int = 10, seed: int = 7, parts=("val", "test")) -> Fixture:
    """``CheXlocalize.zip``: CheXlocalize/gt_annotations_{val,test}.json, CheXpert/{val,test}_labels.csv and
    CheXpert/{val,test}/patient*/study*/view*.jpg (``parts``: the official sample ships val only).

    ``n`` patients per part, one frontal X-ray each (every other one also a
    lateral view, annotated too); 1–2 pathologies per X-ray, only positive
    ones as keys; ``img_size`` is [height, width], points (x, y); the first
    X-ray has "Airspace Opacity" (the labels header calls it "Lung Opacity").
    """
    from tunevlseg.data.masks import rasterise_polygons
    from tunevlseg.data.sources.chexlocalize import TASKS

    rng, members, fx = _rng(seed), {}, Fixture([], 0)
    for part, first in (("val", 64541), ("test", 64741)):
        if part not in parts:
            continue
        annotations = {}
        for i in range(n):
            patient = f"patient{first + i}"
            views = ["view1_frontal"] + (["view2_lateral"] if i % 2 else [])
            for view in views:
                cxr = f"{patient}_study1_{view}"
                members[f"CheXpert/{part}/{patient}/study1/{view}.jpg"] = _encode(_noise(rng, channels=1), "JPEG")
                entry = {"img_size": [H, W]}
                tasks = list(rng.choice(TASKS, size=int(rng.integers(1, 3)), replace=False))
                if i == 0 and "Airspace Opacity" not in tasks:
                    tasks[0] = "Airspace Opacity"
                for task in tasks:
                    polys = []
                    for _ in range(int(rng.integers(1, 3))):
                        x0, y0 = rng.uniform(2, W - 14), rng.uniform(2, H - 12)
                        polys.append([[x0, y0], [x0 + 10.5, y0 + 1.0], [x0 + 8.0, y0 + 9.5], [x0 + 1.0, y0 + 7.0]])
                    entry[str(task)] = polys
                    sid = f"{cxr}_{str(task).lower().replace(' ', '_')}"
                    fx.truth[sid] = rasterise_polygons(polys, (H, W))
                    fx.groups[sid], fx.image_of[sid] = patient, f"CheXpert/{part}/{patient}/study1/{view}.jpg"
                annotations[cxr] = entry
        members[f"CheXpert/{part}_labels.csv"] = (CHEXPERT_HEADER + "\n" + "".join(
            f"CheXpert-v1.0/{part}/{c.split('_')[0]}/{c.split('_')[1]}/{'_'.join(c.split('_')[2:])}.jpg,"
            f"Female,60,{'Lateral' if 'lateral' in c else 'Frontal'},AP" + ",0" * 14 + "\n"
            for c in annotations)).encode()
        members[f"CheXlocalize/gt_annotations_{part}.json"] = json.dumps(annotations).encode()
        members[f"CheXlocalize/gt_segmentations_{part}.json"] = b"{}"
    fx.n_samples = len(fx.truth)
    fx.archives = [_zip(dest / "CheXlocalize.zip", members)]
    return fx


# ---------------------------------------------------------------- natural images: VOC palette PNGs, Cityscapes labelIds


def build_voc2012(dest: Path, n: int = 8, n_val: int = 4, seed: int = 8) -> Fixture:
    """``VOCtrainval_11-May-2012.tar``: VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}.

    Each image has 1–2 classes drawn as blobs with a void (255) outline.
    """
    rng, members, fx = _rng(seed), {}, Fixture([], 0)
    names = {"train": [], "val": []}
    official_test = 0
    for k in range(n + n_val):
        part = "train" if k < n else "val"
        name = f"2007_{k:06d}"
        names[part].append(name)
        labels = np.zeros((H, W), np.uint8)
        for c in rng.choice(np.arange(1, 21), size=int(rng.integers(1, 3)), replace=False):
            blob = _blob(rng) > 0
            labels[blob] = c
        void = (np.roll(labels, 1, 0) != labels) & (labels == 0)
        labels[void] = 255
        members[f"VOCdevkit/VOC2012/JPEGImages/{name}.jpg"] = _encode(_noise(rng), "JPEG")
        members[f"VOCdevkit/VOC2012/SegmentationClass/{name}.png"] = _palette_png(labels)
        members[f"VOCdevkit/VOC2012/Annotations/{name}.xml"] = b"<annotation/>"
        for c in sorted(set(np.unique(labels).tolist()) - {0, 255}):
            sid = f"{name}_{c:02d}"
            fx.truth[sid], fx.groups[sid] = (labels == c).astype(np.uint8), name
            fx.image_of[sid] = f"VOCdevkit/VOC2012/JPEGImages/{name}.jpg"
            official_test += part == "val"
    for part, items in names.items():
        members[f"VOCdevkit/VOC2012/ImageSets/Segmentation/{part}.txt"] = "".join(f"{x}\n" for x in items).encode()
    members["VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt"] = "".join(
        f"{x}\n" for x in names["train"] + names["val"]).encode()
    fx.n_samples, fx.official = len(fx.truth), {"test": official_test}
    fx.archives = [_tar(dest / "VOCtrainval_11-May-2012.tar", members)]
    return fx


CITY_IDS = (7, 8, 11, 21, 23, 24, 26)  # road, sidewalk, building, vegetation, sky, person, car


def build_cityscapes(dest: Path, per_city: int = 2, seed: int = 9) -> Fixture:
    """``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip`` (labelIds, color, instanceIds, polygons)."""
    rng, images, labels_zip, fx = _rng(seed), {}, {}, Fixture([], 0)
    cities = {"train": ["aachen", "bochum", "bremen"], "val": ["frankfurt"]}
    official_test = 0
    for part, names in cities.items():
        for city in names:
            for k in range(per_city):
                stem = f"{city}_{k:06d}_000019"
                ids = np.zeros((H, W), np.uint8)  # 0 = unlabeled (not an evaluation class)
                ids[: H // 3] = 23
                ids[H // 3:, :] = 7
                for c in rng.choice(CITY_IDS[2:], size=2, replace=False):
                    ids[_blob(rng) > 0] = c
                ids[-2:, :4] = 1  # ego vehicle: ignored
                images[f"leftImg8bit/{part}/{city}/{stem}_leftImg8bit.png"] = _encode(_noise(rng), "PNG")
                base = f"gtFine/{part}/{city}/{stem}_gtFine"
                labels_zip[f"{base}_labelIds.png"] = _encode(ids, "PNG")
                labels_zip[f"{base}_color.png"] = _encode(_noise(rng), "PNG")
                labels_zip[f"{base}_instanceIds.png"] = _encode(ids.astype(np.uint16) * 1000, "PNG")
                labels_zip[f"{base}_polygons.json"] = b"{}"
                for c in sorted(set(np.unique(ids).tolist()) & set(CITY_IDS)):
                    sid = f"{stem}_{c:02d}"
                    fx.truth[sid], fx.groups[sid] = (ids == c).astype(np.uint8), city
                    fx.image_of[sid] = f"leftImg8bit/{part}/{city}/{stem}_leftImg8bit.png"
                    official_test += part == "val"
    images["license.txt"] = b"cityscapes"
    labels_zip["license.txt"] = b"cityscapes"
    fx.n_samples, fx.official = len(fx.truth), {"test": official_test}
    fx.archives = [_zip(dest / "leftImg8bit_trainvaltest.zip", images), _zip(dest / "gtFine_trainvaltest.zip", labels_zip)]
    return fx


def medvlsm_names(source: str, sid: str) -> tuple[str, str] | None:
    """``(img_name, mask_name)`` of a sample in the medvlsm annotation files (``anns/*.json``), as those files
    name them (None: medvlsm has no such dataset)."""
    stem = sid.split("_", 1)[1] if source in ("clinicdb", "bkai", "dfu2022") else sid
    if source == "kvasir":
        return f"{stem}.jpg", f"{stem}.jpg"
    if source in ("clinicdb",):
        return f"{stem}.png", f"{stem}.png"
    if source == "bkai":
        return f"{stem}.jpeg", f"{stem}.jpeg"
    if source == "dfu2022":
        return f"{stem}.jpg", f"{stem}.png"
    if source == "isic2016":
        return f"{sid}.jpg", f"{sid}_Segmentation.png"
    if source == "busi":
        cls, k = sid.split("_")
        return f"{int(k)}_{cls}.png", f"{int(k)}_{cls}.png"
    if source == "camus":
        frame, label = sid.rsplit("_", 1)
        return f"{frame}.png", f"mask_{label}/{frame}_gt.png"
    if source == "chexlocalize":
        cxr = "_".join(sid.split("_")[:4])
        return f"{cxr}.jpg", f"{sid}.png"
    return None


BUILDERS = {
    "kvasir": build_kvasir,
    "clinicdb": build_clinicdb,
    "bkai": build_bkai,
    "isic2016": build_isic2016,
    "dfu2022": build_dfu2022,
    "busi": build_busi,
    "camus": build_camus,
    "chexlocalize": build_chexlocalize,
    "voc2012": build_voc2012,
    "cityscapes": build_cityscapes,
}
