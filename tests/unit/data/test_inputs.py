"""Inputs are never silently corrupted: {0,1} masks, 16-bit and float images, NaN/inf, tiny images.

Real files in the raw layouts of registered datasets (Kvasir-SEG, BUSI, CAMUS) or of the
prepare layout (samples.csv), prepared end to end; the assertions are pixel statistics.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.data_fixtures import BUILDERS, _blob, _noise
from tunevlseg.data.ingest import index_dataset, obtain, prepare_settings
from tunevlseg.data.masks import load_mask
from tunevlseg.data.pixels import MIN_SIDE, read_image, window_to_uint8
from tunevlseg.data.prepare import prepare_dataset, resize_image, resize_mask
from tunevlseg.data.synthetic import write_synthetic
from tunevlseg.data.volumes import load_pair

SPLITS = ("train", "val", "test")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cached(prep: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Sample id -> (cached image, cached mask) of a prepared folder (manifest order = array order)."""
    manifest = read_csv(prep / "manifest.csv")
    out = {}
    for split in SPLITS:
        images, masks = np.load(prep / f"{split}_images.npy"), np.load(prep / f"{split}_masks.npy")
        for i, sid in enumerate(m["id"] for m in manifest if m["split"] == split):
            out[sid] = images[i], masks[i]
    return out


def kvasir_release(root: Path, n: int = 10, side: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """A Kvasir-SEG layout with PNG files (the reader accepts .png): even masks valued {0,1}, odd {0,255}.

    Returns sample id -> true (H, W) {0,1} mask.
    """
    rng, truth = np.random.default_rng(seed), {}
    for d in ("images", "masks"):
        (root / "Kvasir-SEG" / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sid = f"cju{i:04d}"
        mask = _blob(rng, side, side)
        Image.fromarray(_noise(rng, side, side)).save(root / "Kvasir-SEG" / "images" / f"{sid}.png")
        stored = mask if i % 2 == 0 else mask * 255
        if i % 4 == 2:
            stored = np.repeat(stored[..., None], 3, axis=-1)  # an RGB {0,1} mask
        Image.fromarray(stored.astype(np.uint8)).save(root / "Kvasir-SEG" / "masks" / f"{sid}.png")
        truth[sid] = mask
    return truth


def prepare_kvasir(root: Path, tmp_path: Path, size: int, tag: str = "") -> Path:
    index_dataset("kvasir", root, tmp_path / f"index{tag}")
    prepare_dataset(tmp_path / f"index{tag}", tmp_path / f"prep{tag}", size=size,
                    **prepare_settings({"source": "kvasir"}))
    return tmp_path / f"prep{tag}"


# ---------------------------------------------------------------- {0,1} masks


def test_kvasir_masks_valued_0_1_keep_their_foreground(tmp_path):
    """Kvasir's threshold:127 rule used to make {0,1} masks empty (0 of 10 kept foreground)."""
    truth = kvasir_release(tmp_path / "root")
    assert {int(np.asarray(Image.open(p)).max()) for p in (tmp_path / "root").rglob("masks/*.png")} == {1, 255}
    same = cached(prepare_kvasir(tmp_path / "root", tmp_path, size=32))  # no resize: exact
    for sid, mask in truth.items():
        assert mask.sum() > 20 and same[sid][1].sum() == mask.sum()
        assert np.array_equal(same[sid][1], mask), sid
    half = cached(prepare_kvasir(tmp_path / "root", tmp_path, size=16, tag="16"))
    for sid, mask in truth.items():  # after the (nearest) resize: its number of ones
        assert half[sid][1].sum() == resize_mask(mask, 16).sum() > 0, sid


def test_mask_rules_around_the_0_1_label_map(tmp_path):
    """max 1 = label map (foreground 1); 0/255 unchanged; the ambiguous-threshold refusal kept."""
    shape = (16, 16)
    values = np.zeros(shape, np.uint8)
    values[4:10, 2:12] = 1
    cases = {"01.png": values, "0255.png": values * 255, "ones.png": np.ones(shape, np.uint8),
             "zeros.png": np.zeros(shape, np.uint8), "grey.png": np.full(shape, 128, np.uint8)}
    for name, array in cases.items():
        Image.fromarray(array).save(tmp_path / name)
    for name in ("01.png", "0255.png"):
        assert load_mask(tmp_path, name, "threshold:127", shape).sum() == 60
    assert load_mask(tmp_path, "ones.png", "threshold:127", shape).sum() == 256
    assert load_mask(tmp_path, "zeros.png", "threshold:127", shape).sum() == 0
    with pytest.raises(ValueError, match=r"grey\.png: every value lies in \[128, 128\]"):
        load_mask(tmp_path, "grey.png", "threshold:127", shape)
    rgb = np.zeros(shape + (3,), np.uint8)  # BKAI-style: red {0,1} ∪ green {0,1}
    rgb[0:3, :, 0] = 1
    rgb[5:6, :, 1] = 1
    Image.fromarray(rgb).save(tmp_path / "rgb01.png")
    assert load_mask(tmp_path, "rgb01.png", "channels:127:0,1", shape).sum() == 4 * 16


# ---------------------------------------------------------------- 16-bit and 8-bit images


def test_busi_16bit_images_use_their_range_and_8bit_stay_identical(tmp_path):
    """A 16-bit grey PNG used to be clipped nearly white (mean 254.4/255)."""
    fx = BUILDERS["busi"](tmp_path / "release")
    root = Path(obtain("busi", tmp_path / "raw", archive=str(fx.archives[0]))["root"])
    h, w = fx.truth["benign_0001"].shape
    ramp = np.tile(np.linspace(0, 65535, w).round().astype(np.uint16), (h, 1))  # 0..65535 left to right
    scan12 = np.tile((np.arange(h) * 4095 // (h - 1)).astype(np.uint16)[:, None], (1, w))  # 12-bit, top to bottom
    ramp_path = next(root.rglob("benign (1).png"))
    scan_path = next(root.rglob("benign (2).png"))
    Image.fromarray(ramp).save(ramp_path)
    Image.fromarray(scan12).save(scan_path)
    assert Image.open(ramp_path).mode == "I;16"
    decoded = read_image(ramp_path)
    row = decoded[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) > 0).all()  # monotonic, not clipped
    assert (decoded == decoded[:1, :, :1]).all() and abs(decoded.mean() - 127.5) < 1
    column = read_image(scan_path)[:, 0, 0].astype(int)
    assert column[0] == 0 and column[-1] == 255 and (np.diff(column) > 0).all()  # own range: 12 bits fill 0..255

    index_dataset("busi", root, tmp_path / "index")
    prep = cached(_prepare(tmp_path, "busi", size=16))
    image = prep["benign_0001"][0][..., 0].astype(int)
    assert (np.diff(image, axis=1) >= 0).all() and image.min() <= 10 and image.max() >= 245
    assert abs(image.mean() - 127.5) < 3, image.mean()
    rows = {r["id"]: r for r in read_csv(tmp_path / "index" / "samples.csv")}
    for sid in ("benign_0003", "malignant_0001", "normal_0001"):  # 8-bit grey: Pillow's conversion, byte for byte
        expected = resize_image(np.asarray(Image.open(rows[sid]["image"]).convert("RGB")), 16)
        assert Image.open(rows[sid]["image"]).mode == "L" and np.array_equal(prep[sid][0], expected)


def _prepare(tmp_path: Path, source: str, size: int, index: str = "index", out: str = "prep") -> Path:
    prepare_dataset(tmp_path / index, tmp_path / out, size=size, **prepare_settings({"source": source}))
    return tmp_path / out


def test_demo_sources_read_as_before(tmp_path):
    """The demo's synthetic sources (8-bit PNGs, int16 NIfTI) decode exactly as the previous readers did."""
    write_synthetic("discs", tmp_path / "discs", n=4, image_size=32, seed=1)
    for path in sorted((tmp_path / "discs" / "images").glob("*.png")):
        assert np.array_equal(read_image(path), np.asarray(Image.open(path).convert("RGB")))
    write_synthetic("ctvolumes", tmp_path / "ct", n=2, image_size=32, seed=2)
    for r in read_csv(tmp_path / "ct" / "samples.csv"):
        volume, _ = load_pair(tmp_path / "ct" / r["image"], tmp_path / "ct" / r["mask"])
        assert volume.dtype == np.int16
        v = volume.astype(np.float32)
        old = np.round(np.clip((v - v.min()) / (v.max() - v.min()), 0.0, 1.0) * 255.0).astype(np.uint8)
        assert np.array_equal(window_to_uint8(volume), old)


# ---------------------------------------------------------------- float images, NaN and inf


def _float_layout(root: Path, n: int = 10, side: int = 16) -> dict[str, np.ndarray]:
    """The prepare layout (samples.csv) with float32 TIFF images (mode F) and 0/255 PNG masks."""
    rng, images, rows = np.random.default_rng(3), {}, []
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        sid = f"f{i:02d}"
        values = (np.linspace(-3.5, 12.0, side * side, dtype=np.float32).reshape(side, side)
                  + rng.normal(0, 0.1, (side, side)).astype(np.float32))
        Image.fromarray(values).save(root / "images" / f"{sid}.tif")
        Image.fromarray(_blob(rng, side, side) * 255).save(root / "masks" / f"{sid}.png")
        rows.append({"id": sid, "image": f"images/{sid}.tif", "mask": f"masks/{sid}.png", "phrase": "x", "group": sid})
        images[sid] = values
    with open(root / "samples.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return images


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    return np.round((values - lo) / (hi - lo) * 255.0).astype(np.uint8)


def test_float_tiff_scaled_by_its_finite_range_nan_and_inf_warned(tmp_path, caplog):
    images = _float_layout(tmp_path / "raw")
    poisoned = images["f03"].copy()
    bad = [(0, 0), (5, 7), (15, 15), (8, 2), (9, 9)]
    for (y, x), v in zip(bad, (np.nan, np.nan, np.nan, np.inf, -np.inf)):
        poisoned[y, x] = v
    Image.fromarray(poisoned).save(tmp_path / "raw" / "images" / "f03.tif")
    assert Image.open(tmp_path / "raw" / "images" / "f03.tif").mode == "F"
    with caplog.at_level(logging.WARNING):
        prepare_dataset(tmp_path / "raw", tmp_path / "prep", size=16, split_fractions=(0.6, 0.2, 0.2))
    warnings = [r.getMessage() for r in caplog.records if "f03.tif" in r.getMessage()]
    assert len(warnings) == 1 and "5 of 256 values are NaN or infinite; set to the finite minimum" in warnings[0]
    prep = cached(tmp_path / "prep")
    for sid, values in images.items():
        if sid != "f03":
            assert np.array_equal(prep[sid][0][..., 0], _minmax(values))  # finite range -> 0..255
            assert prep[sid][0].min() == 0 and prep[sid][0].max() == 255
    finite = np.isfinite(poisoned)
    expected = _minmax(np.where(finite, poisoned, poisoned[finite].min()))
    got = prep["f03"][0][..., 0]
    assert np.array_equal(got, expected) and all(got[y, x] == 0 for y, x in bad)
    assert got.max() == 255 and got.mean() > 100  # not blacked out


def test_all_nan_image_and_nan_labels_are_refused(tmp_path):
    _float_layout(tmp_path / "raw")
    Image.fromarray(np.full((16, 16), np.nan, np.float32)).save(tmp_path / "raw" / "images" / "f04.tif")
    with pytest.raises(ValueError, match=r"image .*f04\.tif: all 256 values are NaN or infinite"):
        prepare_dataset(tmp_path / "raw", tmp_path / "prep", size=16)
    assert not (tmp_path / "prep").exists()
    labels = np.zeros((16, 16, 3), np.float32)
    labels[1, 2, 0], labels[3, 3, 1] = np.nan, np.inf
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "gt.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.float32), np.eye(4)), tmp_path / "ct.nii.gz")
    with pytest.raises(ValueError, match=r"labels .*gt\.nii\.gz: 2 of 768 voxels are NaN or infinite"):
        load_pair(tmp_path / "ct.nii.gz", tmp_path / "gt.nii.gz")


def test_nan_voxels_no_longer_black_out_a_volume(tmp_path, caplog):
    """Per-volume min–max (the ctvolumes layout): one NaN voxel used to make the whole volume 0."""
    write_synthetic("ctvolumes", tmp_path / "clean", n=6, image_size=32, seed=3)
    clean = cached(_prepare_plain(tmp_path / "clean", tmp_path / "prep_clean"))
    raw = Path(shutil.copytree(tmp_path / "clean", tmp_path / "raw"))
    ks = sorted(int(sid.rsplit("_s", 1)[1]) for sid in clean if sid.startswith("patient0002_"))
    path = raw / "patient0002" / "patient0002_ct.nii.gz"
    volume = np.asarray(nib.load(path).dataobj).astype(np.float32)
    bad = []  # one body voxel (neither the volume's minimum nor its maximum) in three kept slices
    for k in (ks[0], ks[len(ks) // 2], ks[-1]):
        y, x = np.argwhere((volume[..., k] > 300) & (volume[..., k] < 600))[0]
        bad.append((int(y), int(x), k))
    for (y, x, k), v in zip(bad, (np.nan, np.inf, -np.inf)):
        volume[y, x, k] = v
    nib.save(nib.Nifti1Image(volume, nib.load(path).affine), path)
    with caplog.at_level(logging.WARNING):
        got = cached(_prepare_plain(raw, tmp_path / "prep"))
    warnings = [r.getMessage() for r in caplog.records if "patient0002_ct.nii.gz" in r.getMessage()]
    assert len(warnings) == 1 and f"3 of {volume.size} values are NaN or infinite" in warnings[0]
    assert sorted(got) == sorted(clean)
    for sid in clean:  # identical, except the three voxels, now the volume's minimum (0)
        image = clean[sid][0].copy()
        for y, x, k in bad:
            if sid == f"patient0002_s{k:02d}":
                assert image[y, x, 0] > 0 and got[sid][0][y, x, 0] == 0
                image[y, x] = 0
        assert np.array_equal(got[sid][0], image) and np.array_equal(got[sid][1], clean[sid][1]), sid


def _prepare_plain(raw: Path, out: Path) -> Path:
    prepare_dataset(raw, out, size=32, split_fractions=(0.5, 0.25, 0.25))
    return out


def test_camus_frame_with_nan_is_warned_and_kept(tmp_path, caplog):
    """The registered NIfTI layout (CAMUS, fixed window 0..255): the warning names the frame and the count."""
    fx = BUILDERS["camus"](tmp_path / "release", n=4)
    root = Path(obtain("camus", tmp_path / "raw", archive=str(tmp_path / "release"))["root"])
    index_dataset("camus", root, tmp_path / "index")
    clean = cached(_prepare(tmp_path, "camus", size=16, out="prep_clean"))
    path = next(root.rglob("patient0001_2CH_ED.nii.gz"))
    frame = np.asarray(nib.load(path).dataobj).astype(np.float32)
    frame[10, 12] = frame[11, 12] = np.nan
    nib.save(nib.Nifti1Image(frame, np.eye(4)), path)
    with caplog.at_level(logging.WARNING):
        got = cached(_prepare(tmp_path, "camus", size=16))
    assert [r.getMessage() for r in caplog.records if str(path) in r.getMessage()] == [
        f"volume {path}: 2 of {frame.size} values are NaN or infinite; set to the finite minimum {frame[np.isfinite(frame)].min():g}"]
    assert len(got) == len(fx.truth)
    for sid in clean:
        if not sid.startswith("patient0001_2CH_ED_"):
            assert np.array_equal(got[sid][0], clean[sid][0]), sid
        else:  # two pixels of 40x32 changed: the 16x16 image moves little, nowhere near black
            diff = np.abs(got[sid][0].astype(int) - clean[sid][0].astype(int))
            assert abs(got[sid][0].mean() - clean[sid][0].mean()) < 1 and np.count_nonzero(diff[..., 0]) <= 6


# ---------------------------------------------------------------- tiny images


def test_tiny_images_are_refused_naming_the_file(tmp_path):
    """A 1x1 image used to become a 64x64 all-foreground sample."""
    kvasir_release(tmp_path / "root")
    tiny = tmp_path / "root" / "Kvasir-SEG" / "images" / "cju0003.png"
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(tiny)
    Image.fromarray(np.full((1, 1), 255, np.uint8)).save(tmp_path / "root" / "Kvasir-SEG" / "masks" / "cju0003.png")
    index_dataset("kvasir", tmp_path / "root", tmp_path / "index")
    with pytest.raises(ValueError, match=rf"image {tiny} is 1x1 px, below the minimum of {MIN_SIDE} px on a side"):
        prepare_dataset(tmp_path / "index", tmp_path / "prep", size=64, **prepare_settings({"source": "kvasir"}))
    assert not (tmp_path / "prep").exists()
    for (h, w), ok in (((7, 40), False), ((40, 7), False), ((MIN_SIDE, MIN_SIDE), True)):
        Image.fromarray(np.zeros((h, w), np.uint8)).save(tiny)
        if ok:
            assert read_image(tiny).shape == (h, w, 3)
        else:
            with pytest.raises(ValueError, match=rf"is {w}x{h} px, below the minimum"):
                read_image(tiny)
    raw = tmp_path / "ct"
    write_synthetic("ctvolumes", raw, n=3, image_size=32, seed=1)
    path = raw / "patient0001" / "patient0001_ct.nii.gz"
    gt = raw / "patient0001" / "patient0001_ct_gt.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 5), np.int16), np.eye(4)), path)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 5), np.uint8), np.eye(4)), gt)
    with pytest.raises(ValueError, match=rf"volume {path} is 4x4 px, below the minimum"):
        prepare_dataset(raw, tmp_path / "prep_ct", size=32)
    assert not (tmp_path / "prep_ct").exists()


def test_label_images_have_one_reader(tmp_path):
    """Indexing (present labels) and preparing (label:V) read VOC/Cityscapes label images the same way."""
    from tunevlseg.data.sources.common import present_labels

    labels = np.zeros((16, 16), np.uint8)
    labels[2:6, 3:9], labels[10:12, :] = 7, 255
    Image.fromarray(labels).save(tmp_path / "ok.png")
    assert present_labels([tmp_path / "ok.png"]) == [[0, 7, 255]]
    assert load_mask(tmp_path, "ok.png", "label:7", (16, 16)).sum() == 24
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "rgb.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    for name, message in (("rgb.png", "has mode RGB; expected a palette or grey label image"),
                          ("cut.png", "is unreadable or truncated")):
        with pytest.raises(ValueError, match=rf"label image {tmp_path / name} {message}"):
            present_labels([tmp_path / name])
        with pytest.raises(ValueError, match=rf"label image {tmp_path / name} {message}"):
            load_mask(tmp_path, name, "label:7", (16, 16))
