"""The user's own data with config only: source folder / datalist / nnunet -> index -> the usual prepare."""

from __future__ import annotations

import csv
import json
import zipfile

import numpy as np
import pytest

from tests.local_fixtures import build_datalist, build_folder, build_nnunet_2d, build_nnunet_3d
from tunevlseg.data.ingest import index_local, prepare_settings
from tunevlseg.data.local import LOCAL_SOURCES, local_inputs, local_rows
from tunevlseg.data.prepare import prepare_dataset
from tunevlseg.data.registry import REGISTRY


def _prepare(tmp_path, name, cfg, size=16):
    index_local(name, cfg, tmp_path / "index" / name)
    settings = prepare_settings(cfg)
    meta = prepare_dataset(tmp_path / "index" / name, tmp_path / "prepared" / name, size,
                           split_fractions=settings["split_fractions"], seed=settings["seed"],
                           empty_slice_fraction=settings.get("empty_slice_fraction", 0.1),
                           val_fraction=settings.get("val_fraction"))
    with open(tmp_path / "prepared" / name / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    with zipfile.ZipFile(tmp_path / "prepared" / name / "test_masks_original.npz") as z:
        originals = {n[:-4]: np.load(z.open(n)) for n in z.namelist()}
    return meta, manifest, originals


def _one_split_per(manifest, key):
    splits = {}
    for r in manifest:
        splits.setdefault(r[key], set()).add(r["split"])
    return {k: v for k, v in splits.items() if len(v) > 1}


def test_local_sources_are_not_registry_entries():
    # a local source needs no fixture builder in tests/data_fixtures.py: it is not a dataset of the registry
    assert not set(LOCAL_SOURCES) & set(REGISTRY)


@pytest.mark.parametrize("layout", ["png16", "jpeg", "mixed"])
def test_folder_layouts_give_the_true_masks(tmp_path, layout):
    cfg, truth = build_folder(tmp_path / "data", layout=layout)
    meta, manifest, originals = _prepare(tmp_path, "mine", cfg)
    assert sum(meta["split_sizes"].values()) == len(truth) == 12
    assert {r["id"] for r in manifest} == set(truth)
    assert originals and all(np.array_equal(originals[k], truth[k]) for k in originals)
    assert {r["p1"] for r in manifest} == {"polyp."}
    assert "case" not in manifest[0]  # 2-D: per-image scores, manifest columns as before
    if layout == "png16":  # two images per patient (group regex): never split apart
        assert {r["group"] for r in manifest} == {f"p{i:02d}" for i in range(6)}
        assert not _one_split_per(manifest, "group")
        images = np.load(tmp_path / "prepared" / "mine" / "train_images.npy")
        assert images.max() > 200 and images.min() < 60  # 12 bits in 16 scaled to the 8-bit range


def test_folder_split_file_phrases_and_errors(tmp_path):
    cfg, truth = build_folder(tmp_path / "data", layout="mixed")
    stems = sorted(truth)
    split = {s: "test" if i < 3 else "val" if i < 5 else "train" for i, s in enumerate(stems)}
    (tmp_path / "split.csv").write_text("image,split\n" + "".join(f"{s}.png,{v}\n" for s, v in split.items()))
    (tmp_path / "phrases.csv").write_text("image,phrase\n" + f"{stems[0]},large polyp\n")
    cfg.update(split_file=str(tmp_path / "split.csv"), phrase_file=str(tmp_path / "phrases.csv"))
    meta, manifest, _ = _prepare(tmp_path, "mine", cfg)
    assert meta["split_sizes"] == {"train": 7, "val": 2, "test": 3}
    assert {r["id"]: r["split"] for r in manifest} == split
    assert {r["id"]: r["p1"] for r in manifest}[stems[0]] == "large polyp."
    # a missing mask: one line naming the image and the expected file
    (tmp_path / "data" / "masks" / f"{stems[4]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"datasets\.mine: image .*{stems[4]}\.bmp has no mask .*masks/"
                                                rf"{stems[4]}\.\*"):
        local_rows("mine", cfg)
    with pytest.raises(FileNotFoundError, match=r"datasets\.x\.images: folder /nope does not exist"):
        local_rows("x", {**cfg, "images": "/nope"})
    with pytest.raises(ValueError, match=r"group pattern '\^zz' does not match"):
        local_rows("x", {**cfg, "group": "^zz", "split_file": None})


def test_datalist_monai_json_and_csv(tmp_path):
    cfg, truth = build_datalist(tmp_path / "monai")
    meta, manifest, originals = _prepare(tmp_path, "dl", cfg)
    assert meta["split_sizes"] == {"train": 6, "val": 2, "test": 2}  # training / validation / test keys
    assert {r["id"] for r in manifest if r["split"] == "test"} == {"case08", "case09"}
    assert all(np.array_equal(originals[k], truth[k]) for k in originals) and len(originals) == 2
    assert local_inputs(cfg) == [cfg["path"]]
    from tunevlseg.data.ingest import dataset_status, release_files

    assert release_files(cfg, tmp_path / "raw") == []
    assert dataset_status("dl", cfg, tmp_path / "results", tmp_path / "raw") == (
        "dl (datalist): local files (run `tunevlseg data check` to verify them)")

    cfg, truth = build_datalist(tmp_path / "csv", n=20, kind="csv")
    meta, manifest, _ = _prepare(tmp_path, "dlcsv", cfg)
    assert sum(meta["split_sizes"].values()) == 20 and min(meta["split_sizes"].values()) >= 2
    assert {r["group"] for r in manifest} == {f"pat{i}" for i in range(10)} and not _one_split_per(manifest, "group")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "a.png"}]))
    with pytest.raises(ValueError, match=r"bad\.json entry 1 \(a\.png\) has no label \(mask\): it cannot be scored"):
        local_rows("dl", {"source": "datalist", "path": str(bad), "phrase": "x"})


def test_nnunet_2d_one_sample_per_image_and_label(tmp_path):
    cfg, truth = build_nnunet_2d(tmp_path / "Dataset101_Fundus")
    meta, manifest, originals = _prepare(tmp_path, "fundus", cfg)
    assert sum(meta["split_sizes"].values()) == 16 == len(truth)
    assert {r["p1"] for r in manifest} == {"optic disc.", "optic cup."}
    assert not _one_split_per(manifest, "group")  # an image's two samples share its split
    assert all(np.array_equal(originals[k], truth[k]) for k in originals)
    rows = local_rows("f", {**cfg, "label": "optic_cup", "phrase": "cup"})
    assert len(rows) == 8 and rows[0]["mask_rule"] == "label:2" and rows[0]["phrase"] == "cup"
    with pytest.raises(ValueError, match=r"datasets\.f\.label: 'vessel' is not a label of dataset\.json; its "
                                         r"labels: \['background', 'optic_cup', 'optic_disc'\]"):
        local_rows("f", {**cfg, "label": "vessel"})


def test_nnunet_3d_cases_stay_in_one_split_reoriented(tmp_path):
    cfg, truth = build_nnunet_3d(tmp_path / "Dataset017_Liver", n=16)
    cfg["empty_slice_fraction"] = 0.0
    meta, manifest, originals = _prepare(tmp_path, "liver", cfg)
    assert {r["id"] for r in manifest} == set(truth)  # every tumour slice, no empty one (fraction 0)
    assert not _one_split_per(manifest, "case") and not _one_split_per(manifest, "group")
    assert {r["group"] for r in manifest} == {f"pat{i:02d}" for i in range(8)}
    assert all(n > 0 for n in meta["split_sizes"].values())
    assert {r["spacing"] for r in manifest} == {"0.8x0.7x2.5"}
    assert {r["case"] for r in manifest} == {r["id"].rsplit("_s", 1)[0] for r in manifest}
    # LPS storage: the canonical (RAS+) slices are the truth, the raw array order would be flipped
    assert originals and all(np.array_equal(originals[k], truth[k]) for k in originals)
    assert {(int(r["orig_h"]), int(r["orig_w"])) for r in manifest} == {(20, 16)}

    every = _prepare(tmp_path / "all", "liver", {**cfg, "empty_slice_fraction": 1.0})[1]
    assert len(every) == 16 * 10  # 16 cases x 10 axial slices
    sagittal = local_rows("liver", {**cfg, "axis": 0, "empty_slice_fraction": 0.0})
    assert {r["spacing"] for r in sagittal} == {"0.7x2.5x0.8"} and {r["axis"] for r in sagittal} == {0}


def test_nnunet_3d_channel_and_official_test(tmp_path):
    cfg, _ = build_nnunet_3d(tmp_path / "Dataset017_Liver", n=8, test_cases=2)
    rows = local_rows("liver", {**cfg, "channel": "decoy"})
    assert {r["image"].rsplit("_", 1)[1] for r in rows} == {"0001.nii.gz"}
    assert [r["split"] for r in rows].count("test") == 2 and "imagesTs" in rows[-1]["image"]
    meta, manifest, _ = _prepare(tmp_path, "liver", {**cfg, "empty_slice_fraction": 0.0})
    assert {r["case"] for r in manifest if r["split"] == "test"} == {"pat04_0", "pat04_1"}
    assert meta["split_sizes"]["val"] > 0 and not _one_split_per(manifest, "group")
    with pytest.raises(ValueError, match=r"datasets\.liver\.channel: 'MR' is not a channel of dataset\.json"):
        local_rows("liver", {**cfg, "channel": "MR"})
    (tmp_path / "Dataset017_Liver" / "imagesTr" / "pat00_1_0001.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"case pat00_1 has no channel 1 file .*pat00_1_0001\.nii\.gz"):
        local_rows("liver", {**cfg, "channel": 1})


def test_blank_slices_of_different_volumes_do_not_merge_cases(tmp_path):
    import nibabel as nib

    cfg, _ = build_nnunet_3d(tmp_path / "Dataset017_Liver", n=16)
    for path in sorted((tmp_path / "Dataset017_Liver" / "imagesTr").glob("*_0000.nii.gz")):
        img = nib.load(str(path))
        data = np.asarray(img.dataobj).copy()
        data[..., 0] = 0  # zero padding: the same blank slice in every volume
        nib.save(nib.Nifti1Image(data, img.affine), str(path))
    meta, manifest, _ = _prepare(tmp_path, "liver", {**cfg, "empty_slice_fraction": 1.0})
    assert meta["groups_merged"] == {} and meta["duplicates"]["n_sets"] == 0
    assert {r["group"] for r in manifest} == {f"pat{i:02d}" for i in range(8)}
    assert sum(r["id"].endswith("_s00") for r in manifest) == 16
