"""Unit tests for tunevlseg.data: generators, volumes, preparation, cache and Dataset."""

from __future__ import annotations

import csv
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from tunevlseg.data.atomic import atomic_dir, atomic_write
from tunevlseg.data.cache import PreparedSplit, SegmentationDataset, manifest_hash
from tunevlseg.data.prepare import prepare_dataset
from tunevlseg.data.synthetic import DISC_COLOURS, GENERATORS, write_synthetic
from tunevlseg.data.volumes import load_pair, load_volume, slice_volume


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def load_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def shapes_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "shapes"
    write_synthetic("shapes", out, n=24, image_size=48, seed=1)
    return out


@pytest.fixture(scope="module")
def tissue_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "tissue"
    write_synthetic("tissue", out, n=40, image_size=48, seed=2)
    return out


@pytest.fixture(scope="module")
def ct_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "ct"
    write_synthetic("ctvolumes", out, n=6, image_size=40, seed=3)
    return out


@pytest.fixture()
def raw_copy(tissue_raw, tmp_path) -> Path:
    """A writable copy of the tissue raw folder, for corrupting."""
    return Path(shutil.copytree(tissue_raw, tmp_path / "raw"))


# ---------------------------------------------------------------- atomic helpers


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "a.npy"
    with atomic_write(target) as tmp:
        assert tmp.name.endswith("a.npy") and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))
    assert np.array_equal(np.load(target), np.arange(3))
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        np.save(tmp, np.arange(5))
        raise RuntimeError("boom")
    assert np.array_equal(np.load(target), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "x").write_text("2")
        raise RuntimeError("boom")
    assert (target / "x").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "y").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


# ---------------------------------------------------------------- generators


def test_generators_registry():
    assert set(GENERATORS) == {"shapes", "discs", "tissue", "ctvolumes"}
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        write_synthetic("nope", Path("unused"), 1, 64, 0)


def test_shapes_generator(shapes_raw):
    rows = read_csv(shapes_raw / "samples.csv")
    assert len(rows) == 48 and list(rows[0]) == ["id", "image", "mask", "phrase", "group"]
    # both discs of every image are listed: same image, two masks, two phrases
    by_image = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r)
    assert len(by_image) == 24 and all(len(v) == 2 and v[0]["phrase"] != v[1]["phrase"] for v in by_image.values())
    refs = {f"{c} disc": np.array(rgb) for c, rgb in DISC_COLOURS.items()}
    for r in rows:
        image, mask = load_png(shapes_raw / r["image"]), load_png(shapes_raw / r["mask"])
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert mask.shape == (48, 48) and set(np.unique(mask)) == {0, 255}
        assert r["group"] == Path(r["image"]).stem
        area = (mask > 0).mean()  # one disc of radius 12–22 % of the side
        assert np.pi * 0.11**2 < area < np.pi * 0.23**2
        mean_rgb = image[mask > 0].mean(axis=0)
        nearest = min(refs, key=lambda p: np.linalg.norm(refs[p] - mean_rgb))
        assert nearest == r["phrase"], (r["id"], mean_rgb)


def test_shapes_deterministic_and_colour_option(shapes_raw, tmp_path):
    write_synthetic("shapes", tmp_path / "a", n=24, image_size=48, seed=1)
    first = read_csv(shapes_raw / "samples.csv")[0]
    assert (tmp_path / "a" / first["image"]).read_bytes() == (shapes_raw / first["image"]).read_bytes()
    write_synthetic("shapes", tmp_path / "b", n=24, image_size=48, seed=5, colours=["red", "blue"])
    assert (tmp_path / "b" / first["image"]).read_bytes() != (shapes_raw / first["image"]).read_bytes()
    assert {r["phrase"] for r in read_csv(tmp_path / "b" / "samples.csv")} == {"red disc", "blue disc"}


def test_tissue_generator(tissue_raw):
    rows = read_csv(tissue_raw / "samples.csv")
    assert len(rows) == 40 and {r["phrase"] for r in rows} == {"polyp"}
    empty = 0
    for r in rows:
        image, mask = load_png(tissue_raw / r["image"]), load_png(tissue_raw / r["mask"])
        assert image.shape == (48, 48, 3) and mask.shape == (48, 48)
        assert set(np.unique(mask)) <= {0, 255}
        if not mask.any():
            empty += 1
            continue
        red, green, blue = image[mask > 0].mean(axis=0)  # yellowish target
        assert red > 140 and green > 120 and blue < 110, (r["id"], red, green, blue)
    assert empty == 4  # 10 %


def test_ctvolumes_generator(ct_raw):
    rows = read_csv(ct_raw / "samples.csv")
    assert [r["id"] for r in rows] == [f"patient{i:04d}" for i in range(1, 7)]
    assert {r["label"] for r in rows} == {"1"} and {r["phrase"] for r in rows} == {"left ventricle"}
    for r in rows:
        assert r["image"] == f"{r['id']}/{r['id']}_ct.nii.gz" and r["mask"] == f"{r['id']}/{r['id']}_ct_gt.nii.gz"
        image, labels = load_pair(ct_raw / r["image"], ct_raw / r["mask"])
        assert image.shape[:2] == (40, 40) and 12 <= image.shape[2] <= 20
        assert set(np.unique(labels)) == {0, 1, 2}
        present = [(labels[..., k] == 1).any() for k in range(image.shape[2])]
        assert 0 < sum(present) < len(present)  # target spans a subset of slices
        background = image[labels == 0]
        body = background[background > 150].mean()  # air is ~50
        assert image[labels == 1].mean() > body + 200 and image[labels == 2].mean() < body - 100


# ---------------------------------------------------------------- volumes


def test_nifti_round_trip(tmp_path):
    data = np.random.default_rng(0).normal(size=(7, 9, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    assert np.array_equal(load_volume(tmp_path / "v.nii.gz"), data)


def test_nifti_monai_reader_agrees(tmp_path):
    pytest.importorskip("monai")
    data = np.arange(7 * 9 * 5, dtype=np.float32).reshape(7, 9, 5)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    assert np.array_equal(load_volume(tmp_path / "v.nii.gz", reader="monai"), data)


def test_volume_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        load_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        load_volume(tmp_path / "bad.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), tmp_path / "b.nii.gz")
    with pytest.raises(ValueError, match=r"a\.nii\.gz.*b\.nii\.gz"):
        load_pair(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz")


def test_slice_volume_keeps_exactly_label_slices():
    image = np.random.default_rng(0).random((10, 12, 6)).astype(np.float32)
    labels = np.zeros((10, 12, 6), np.uint8)
    labels[2:5, 3:6, 1] = 1
    labels[0, 0, 2] = 1
    labels[4:8, 4:9, 4] = 1
    labels[1:3, 1:3, 5] = 2  # other structure only
    out = slice_volume(image, labels, 1)
    assert [k for k, _, _ in out] == [1, 2, 4]
    for k, im, mask in out:
        assert np.array_equal(im, image[..., k])
        assert mask.dtype == np.uint8 and np.array_equal(mask, (labels[..., k] == 1).astype(np.uint8))
    with_empty = [k for k, _, _ in slice_volume(image, labels, 1, empty_fraction=0.3, seed=1)]
    extra = set(with_empty) - {1, 2, 4}
    assert len(extra) == 1 and extra <= {0, 3, 5}
    assert [k for k, _, _ in slice_volume(image, labels, 2)] == [5]
    assert [k for k, _, _ in slice_volume(image, labels, 1, axis=0)] == [0, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="shape"):
        slice_volume(image, labels[..., :5], 1)


# ---------------------------------------------------------------- prepare


def test_prepare_2d(tissue_raw, tmp_path):
    raw = Path(shutil.copytree(tissue_raw, tmp_path / "raw"))
    rows = read_csv(raw / "samples.csv")
    for i, r in enumerate(rows):  # groups of 3 consecutive samples (like patients)
        r["group"] = f"g{i // 3}"
    write_csv(raw / "samples.csv", rows)
    meta = prepare_dataset(raw, tmp_path / "prep", size=32, seed=0)
    assert sum(meta["split_sizes"].values()) == 40 and min(meta["split_sizes"].values()) > 0
    manifest = read_csv(tmp_path / "prep" / "manifest.csv")
    assert list(manifest[0]) == [
        "id", "split", "source_image", "source_mask", "content_hash", "orig_h", "orig_w", "group", "p0", "p1", "p2", "p3", "p4",
    ]
    assert {m["p1"] for m in manifest} == {"polyp."} and {m["p0"] for m in manifest} == {""}
    split_of_group: dict[str, set] = {}
    for m in manifest:
        split_of_group.setdefault(m["group"], set()).add(m["split"])
    assert all(len(s) == 1 for s in split_of_group.values())
    assert meta["manifest_sha256"] == manifest_hash(tmp_path / "prep")
    for split in ("train", "val", "test"):
        ps = PreparedSplit(tmp_path / "prep", split)
        assert len(ps) == meta["split_sizes"][split]
        assert ps.images.shape == (len(ps), 32, 32, 3) and ps.images.dtype == np.uint8
        assert ps.masks.shape == (len(ps), 32, 32) and set(np.unique(ps.masks)) <= {0, 1}
        assert ps.ids == [m["id"] for m in manifest if m["split"] == split]
    test = PreparedSplit(tmp_path / "prep", "test")
    for i, sid in enumerate(test.ids):
        original = test.original_mask(i)
        assert original.shape == (48, 48)
        assert np.array_equal(original, (load_png(raw / f"masks/{sid}.png") > 0).astype(np.uint8))
        nearest = np.asarray(Image.fromarray(original * 255).resize((32, 32), Image.Resampling.NEAREST)) // 255
        assert np.array_equal(test.masks[i], nearest)
    with pytest.raises(ValueError):
        PreparedSplit(tmp_path / "prep", "train").original_mask(0)


def test_prepare_seeds_and_workers(tissue_raw, tmp_path):
    prepare_dataset(tissue_raw, tmp_path / "a", size=24, seed=0)
    prepare_dataset(tissue_raw, tmp_path / "b", size=24, seed=0, workers=2)
    prepare_dataset(tissue_raw, tmp_path / "c", size=24, seed=1)
    assert manifest_hash(tmp_path / "a") == manifest_hash(tmp_path / "b")
    assert np.array_equal(np.load(tmp_path / "a" / "train_images.npy"), np.load(tmp_path / "b" / "train_images.npy"))
    assert PreparedSplit(tmp_path / "a", "test").ids != PreparedSplit(tmp_path / "c", "test").ids


def test_prepare_volumes(ct_raw, tmp_path):
    meta = prepare_dataset(ct_raw, tmp_path / "prep", size=48, seed=0, empty_slice_fraction=0.1)  # upsampling: no mask pixel lost
    manifest = read_csv(tmp_path / "prep" / "manifest.csv")
    assert sum(meta["split_sizes"].values()) == len(manifest)
    assert {m["p1"] for m in manifest} == {"left ventricle."}
    n_empty = 0
    for r in read_csv(ct_raw / "samples.csv"):
        _, labels = load_pair(ct_raw / r["image"], ct_raw / r["mask"])
        target = {k for k in range(labels.shape[2]) if (labels[..., k] == 1).any()}
        kept = {int(m["id"].rsplit("_s", 1)[1]) for m in manifest if m["group"] == r["id"]}
        n_without = labels.shape[2] - len(target)  # every target slice + 10 % (>= 1) of the others
        assert target <= kept and len(kept - target) == max(1, round(0.1 * n_without))
        n_empty += len(kept - target)
    splits = {s: PreparedSplit(tmp_path / "prep", s) for s in ("train", "val", "test")}
    empty_cached = sum(int((ps.masks.reshape(len(ps), -1).max(1) == 0).sum()) for ps in splits.values())
    assert empty_cached == n_empty
    for ps in splits.values():
        assert set(np.unique(ps.masks)) <= {0, 1} and ps.images.shape[1:] == (48, 48, 3)
        assert np.array_equal(ps.images[..., 0], ps.images[..., 2])  # grey replicated to RGB
    test = splits["test"]
    assert len(test) > 0 and test.original_mask(0).shape == (40, 40)
    # target slices are the bright blob: cached image brighter inside the mask than outside
    ps = splits["train"]
    i = int(np.argmax(ps.masks.reshape(len(ps), -1).sum(1)))
    inside = ps.images[i][ps.masks[i] > 0].mean()
    assert inside > ps.images[i][ps.masks[i] == 0].mean() + 60


def _planted_duplicate(tissue_raw, tmp_path):
    """A copy of the tissue set where a test image is overwritten by a train image (masks differ)."""
    prepare_dataset(tissue_raw, tmp_path / "ok", size=24, seed=0, leak_policy="fail")
    manifest = read_csv(tmp_path / "ok" / "manifest.csv")
    a = next(m for m in manifest if m["split"] == "train")
    b = next(m for m in manifest if m["split"] == "test")
    raw = Path(shutil.copytree(tissue_raw, tmp_path / "raw"))
    shutil.copy(raw / a["source_image"], raw / b["source_image"])
    return raw, a, b


def test_duplicates_join_one_group(tissue_raw, tmp_path):
    raw, a, b = _planted_duplicate(tissue_raw, tmp_path)
    meta = prepare_dataset(raw, tmp_path / "prep", size=24, seed=0)  # default leak_policy: group
    assert meta["leak_policy"] == "group" and sum(meta["split_sizes"].values()) == 40  # nothing lost
    manifest = {m["id"]: m for m in read_csv(tmp_path / "prep" / "manifest.csv")}
    assert manifest[a["id"]]["split"] == manifest[b["id"]]["split"]
    group = min(a["group"], b["group"])
    assert manifest[a["id"]]["group"] == manifest[b["id"]]["group"] == group
    assert meta["groups_merged"] == {group: sorted([a["group"], b["group"]])}
    assert meta["duplicates"]["sets"] == [sorted([a["id"], b["id"]])] and meta["n_duplicates_dropped"] == 0
    # the two copies carry different masks: listed, with their IoU
    mask_a = load_png(raw / a["source_mask"]) > 0
    mask_b = load_png(raw / b["source_mask"]) > 0
    iou = round((mask_a & mask_b).sum() / (mask_a | mask_b).sum(), 4)
    # the two copies carry different masks: listed (csv order), with their IoU
    assert meta["conflicting_masks"] == [{"samples": sorted([a["id"], b["id"]]), "phrase": "polyp", "iou": iou}]
    # deterministic: the same seed gives the same cache
    again = prepare_dataset(raw, tmp_path / "again", size=24, seed=0, workers=2)
    assert again["manifest_sha256"] == meta["manifest_sha256"]


def test_leak_policies_fail_and_drop(tissue_raw, tmp_path):
    raw, a, b = _planted_duplicate(tissue_raw, tmp_path)
    with pytest.raises(ValueError, match=rf"split leak: identical image content in {a['id']} .*train.* and {b['id']}"):
        prepare_dataset(raw, tmp_path / "prep", size=24, seed=0, leak_policy="fail")
    assert not (tmp_path / "prep").exists()
    meta = prepare_dataset(raw, tmp_path / "prep", size=24, seed=0, leak_policy="drop")
    assert meta["n_duplicates_dropped"] == 1 and sum(meta["split_sizes"].values()) == 39
    assert meta["duplicates_dropped"][0].startswith(f"{b['id']} (") and a["id"] in meta["duplicates_dropped"][0]
    assert b["id"] not in PreparedSplit(tmp_path / "prep", "test").ids
    with pytest.raises(ValueError, match="leak_policy must be one of"):
        prepare_dataset(raw, tmp_path / "x", size=24, leak_policy="ignore")


def test_empty_split_is_an_error_naming_the_dataset(tissue_raw, tmp_path):
    with pytest.raises(ValueError, match=r"dataset tissue: split sizes train/val/test = 36/4/0 samples: test is empty"):
        prepare_dataset(tissue_raw, tmp_path / "prep", size=24, split_fractions=(0.9, 0.1, 0.0))
    with pytest.raises(ValueError, match=r"dataset tissue: split sizes train/val/test = 40/0/0 samples: val, test are"):
        prepare_dataset(tissue_raw, tmp_path / "prep", size=24, split_fractions=(1.0, 0.0, 0.0))
    assert not (tmp_path / "prep").exists()


def test_official_split_keeps_the_held_out_copy(tissue_raw, tmp_path):
    """With an official split, copies cannot share a split: the test copy stays, the train copy goes."""
    raw = Path(shutil.copytree(tissue_raw, tmp_path / "raw"))
    rows = read_csv(raw / "samples.csv")
    for i, r in enumerate(rows):
        r["split"] = "test" if i >= 30 else "train"
    write_csv(raw / "samples.csv", rows)
    shutil.copy(raw / rows[35]["image"], raw / rows[3]["image"])  # a test image also in train
    shutil.copy(raw / rows[5]["image"], raw / rows[6]["image"])  # two train copies: one group, carved together
    meta = prepare_dataset(raw, tmp_path / "prep", size=24, seed=0)
    manifest = {m["id"]: m for m in read_csv(tmp_path / "prep" / "manifest.csv")}
    assert rows[3]["id"] not in manifest and manifest[rows[35]["id"]]["split"] == "test"
    assert meta["n_duplicates_dropped"] == 1 and meta["duplicates_dropped"][0].startswith(f"{rows[3]['id']} (")
    assert manifest[rows[5]["id"]]["split"] == manifest[rows[6]["id"]]["split"] != "test"
    assert meta["groups_merged"] == {rows[5]["group"]: [rows[5]["group"], rows[6]["group"]]}
    assert meta["split_sizes"]["test"] == 10 and sum(meta["split_sizes"].values()) == 39


def test_prepare_rejects_non_binary_mask(raw_copy, tmp_path):
    mask_path = raw_copy / "masks" / "img00007.png"
    mask = load_png(mask_path).copy()
    mask[0, 0] = 128
    Image.fromarray(mask).save(mask_path)
    with pytest.raises(ValueError, match=r"img00007\.png.*not binary"):
        prepare_dataset(raw_copy, tmp_path / "prep", size=24)
    assert not (tmp_path / "prep").exists()


def test_prepare_rejects_truncated_image(raw_copy, tmp_path):
    image_path = raw_copy / "images" / "img00011.png"
    image_path.write_bytes(image_path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"img00011\.png.*truncated"):
        prepare_dataset(raw_copy, tmp_path / "prep", size=24)
    assert not (tmp_path / "prep").exists()


def test_prepare_rejects_size_mismatch(raw_copy, tmp_path):
    Image.new("L", (40, 48)).save(raw_copy / "masks" / "img00003.png")
    with pytest.raises(ValueError, match=r"size mismatch.*img00003\.png"):
        prepare_dataset(raw_copy, tmp_path / "prep", size=24)
    assert not (tmp_path / "prep").exists()


def test_prepare_missing_files(raw_copy, tmp_path):
    (raw_copy / "images" / "img00005.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"img00005\.png"):
        prepare_dataset(raw_copy, tmp_path / "prep", size=24)
    (raw_copy / "samples.csv").unlink()
    with pytest.raises(FileNotFoundError, match="samples.csv"):
        prepare_dataset(raw_copy, tmp_path / "prep", size=24)
    assert not (tmp_path / "prep").exists()


def test_failed_prepare_keeps_previous_cache(tissue_raw, raw_copy, tmp_path):
    prepare_dataset(tissue_raw, tmp_path / "prep", size=24, seed=0)
    before = manifest_hash(tmp_path / "prep")
    Image.new("L", (48, 48), 77).save(raw_copy / "masks" / "img00001.png")
    with pytest.raises(ValueError):
        prepare_dataset(raw_copy, tmp_path / "prep", size=24, seed=0)
    assert manifest_hash(tmp_path / "prep") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep", "raw"]


def test_prepare_nifti_shape_mismatch(ct_raw, tmp_path):
    raw = Path(shutil.copytree(ct_raw, tmp_path / "raw"))
    gt = raw / "patient0002" / "patient0002_ct_gt.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 3), np.uint8), np.eye(4)), gt)
    with pytest.raises(ValueError, match=r"shape mismatch.*patient0002_ct_gt\.nii\.gz"):
        prepare_dataset(raw, tmp_path / "prep", size=24)
    assert not (tmp_path / "prep").exists()


# ---------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def prepared(shapes_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "shapes"
    prepare_dataset(shapes_raw, out, size=32, seed=0)
    return out


def test_dataset_items(prepared):
    split = PreparedSplit(prepared, "train")
    ds = SegmentationDataset(split)
    item = ds[3]
    assert set(item) == {"image", "mask", "prompt", "index"}
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, 32, 32) and item["mask"].dtype == torch.float32
    assert item["prompt"] == split.prompts[3] and item["prompt"].endswith(" disc.") and item["index"] == 3
    expected = torch.from_numpy(np.array(split.images[3])).permute(2, 0, 1).float() / 255.0
    assert torch.equal(item["image"], expected)
    assert torch.equal(item["mask"][0], torch.from_numpy(np.array(split.masks[3])).float())
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and len(batch["prompt"]) == 4


def test_dataset_augmentation(prepared):
    split = PreparedSplit(prepared, "train")
    ds = SegmentationDataset(split, augment=True, seed=0)
    changed = 0
    for i in range(len(ds)):
        item = ds[i]
        assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert torch.equal(item["image"], ds[i]["image"])  # deterministic per (seed, epoch, index)
        changed += not torch.equal(item["image"], SegmentationDataset(split)[i]["image"])
    assert 0 < changed < len(ds)  # p = 0.2 per transform


def test_prepared_split_prompt_key_and_pickle(prepared):
    assert set(PreparedSplit(prepared, "val", prompt_key="p0").prompts) == {""}
    with pytest.raises(ValueError, match="p9"):
        PreparedSplit(prepared, "val", prompt_key="p9")
    with pytest.raises(ValueError, match="split"):
        PreparedSplit(prepared, "dev")
    split = PreparedSplit(prepared, "val")
    clone = pickle.loads(pickle.dumps(split))
    assert clone.ids == split.ids and np.array_equal(clone.images, split.images)
