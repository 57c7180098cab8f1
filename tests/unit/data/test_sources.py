"""The ten real datasets end to end on miniature releases in their real layouts (no network).

Direct downloads go through the real fetch code against a local HTTP server;
gated archives are dropped where the instructions say. Each dataset is then
extracted, indexed, prepared, and checked: sample counts per split, binary
masks equal to the masks drawn into the fixture, nearest resizing, prompts,
patient/group integrity and the leak audit.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import http.server
import inspect
import io
import json
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data_fixtures import BUILDERS, H, W, medvlsm_names
from tunevlseg.cli import main as cli_main
from tunevlseg.data import registry
from tunevlseg.data.cache import PreparedSplit, manifest_hash
from tunevlseg.data.fetch import download, safe_extract
from tunevlseg.data.ingest import (annotation_files, dataset_status, index_dataset, obtain, prepare_settings,
                                   release_files)
from tunevlseg.data.prepare import prepare_dataset
from tunevlseg.data.masks import load_mask
from tunevlseg.data.prompts import build_prompts, mask_facts
from tunevlseg.data.sources.clinicdb import sequence_of

SPLITS = ("train", "val", "test")
JPEG_MASKS = {"kvasir", "bkai"}  # lossy masks: compare by IoU, not exactly
PHRASES = {"kvasir": {"polyp"}, "clinicdb": {"polyp"}, "bkai": {"polyp"}, "isic2016": {"skin lesion"},
           "dfu2022": {"foot ulcer"}, "busi": {"breast tumor"},
           "camus": {"left ventricle", "myocardium", "left atrium"}}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- local HTTP server with Range support


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_next: list[int] = []  # byte counts after which the next responses drop the connection
    log: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 (http.server API)
        data = self.files.get(self.path)
        rng = self.headers.get("Range")
        self.log.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data):
            self.send_error(416)
            return
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.cut_next:
            self.wfile.write(body[: self.cut_next.pop(0)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler
    srv.shutdown()


@pytest.fixture()
def serve(server):
    base, handler = server
    handler.files.clear(), handler.cut_next.clear(), handler.log.clear()

    def add(name: str, data: bytes) -> str:
        handler.files[f"/{name}"] = data
        return f"{base}/{name}"

    return add, handler


# ---------------------------------------------------------------- fetch


def test_download_resumes_verifies_and_records(serve, tmp_path):
    add, handler = serve
    blob = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    digest = hashlib.sha256(blob).hexdigest()
    url = add("big.zip", blob)
    handler.cut_next[:] = [1 << 20]  # the first transfer stops after 1 MiB
    assert download(url, tmp_path / "big.zip", digest) == digest
    assert (tmp_path / "big.zip").read_bytes() == blob
    assert handler.log == [("/big.zip", None), ("/big.zip", f"bytes={1 << 20}-")]
    assert not (tmp_path / "big.zip.part").exists()

    # interrupted with no retry left: the .part stays, the next call resumes from it
    handler.log.clear()
    handler.cut_next[:] = [700_000]
    with pytest.raises(RuntimeError, match=r"cannot download .*again.zip.*run again to resume"):
        download(add("again.zip", blob), tmp_path / "again.zip", digest, retries=1)
    assert (tmp_path / "again.zip.part").stat().st_size == 700_000
    assert download(f"{url[:-len('big.zip')]}again.zip", tmp_path / "again.zip", digest) == digest
    assert handler.log[-1] == ("/again.zip", "bytes=700000-")

    # wrong checksum: error naming the file and both hashes, nothing kept
    with pytest.raises(ValueError, match=rf"bad.zip has sha256 {digest}, expected 0{{64}}"):
        download(add("bad.zip", blob), tmp_path / "bad.zip", "0" * 64)
    assert not (tmp_path / "bad.zip").exists() and not (tmp_path / "bad.zip.part").exists()

    # unknown checksum: recorded on first download, enforced afterwards
    url = add("tofu.zip", blob)
    assert download(url, tmp_path / "tofu.zip", None) == digest
    assert (tmp_path / "tofu.zip.sha256").read_text().split()[0] == digest
    (tmp_path / "tofu.zip").unlink()
    handler.files["/tofu.zip"] = blob[:-1] + b"x"
    with pytest.raises(ValueError, match="tofu.zip has sha256"):
        download(url, tmp_path / "tofu.zip", None)


# ---------------------------------------------------------------- extraction


def _tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tf:
        tf.addfile(_file_info("ok/a.txt", b"fine"), io.BytesIO(b"fine"))
        for m in members:
            tf.addfile(m, io.BytesIO(b"evil") if m.isfile() else None)
    return path


def _file_info(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("make, message", [
    (lambda p: _tar_with(p, _file_info("../evil.txt", b"evil")), r"'\.\.' component '\.\./evil\.txt'"),
    (lambda p: _tar_with(p, _file_info("/tmp/evil.txt", b"evil")), r"absolute path '/tmp/evil\.txt'"),
    (lambda p: _tar_with(p, _link("ok/up", "../../evil.txt")), r"link 'ok/up' -> '\.\./\.\./evil\.txt' leaves"),
    (lambda p: _tar_with(p, _link("ok/hard", "../evil.txt", tarfile.LNKTYPE)), r"link 'ok/hard' .* leaves"),
    (lambda p: _tar_with(p, _link("ok/abs", "/etc/passwd")), r"points to absolute path '/etc/passwd'"),
])
def test_safe_extract_refuses_escapes(tmp_path, make, message):
    archive = make(tmp_path / "bad.tar")
    with pytest.raises(ValueError, match=rf"bad\.tar.*{message}"):
        safe_extract(archive, tmp_path / "out" / "x")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # not even a temp folder


def test_safe_extract_zip_and_bad_archives(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("../evil.txt", "evil")
    with pytest.raises(ValueError, match=r"evil\.zip.*'\.\./evil\.txt'"):
        safe_extract(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()
    zipfile.ZipFile(tmp_path / "empty.zip", "w").close()
    with pytest.raises(ValueError, match=r"empty\.zip is empty"):
        safe_extract(tmp_path / "empty.zip", tmp_path / "out")
    (tmp_path / "notes.zip").write_text("not an archive")
    with pytest.raises(ValueError, match=r"notes\.zip is not a zip or tar archive"):
        safe_extract(tmp_path / "notes.zip", tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "good.zip", "w") as zf:
        zf.writestr("d/inner.txt", "ok")
    assert (safe_extract(tmp_path / "good.zip", tmp_path / "out") / "d" / "inner.txt").read_text() == "ok"


# ---------------------------------------------------------------- prompts


def test_prompts_from_masks():
    mask = np.zeros((100, 100), np.uint8)
    mask[5:15, 70:80] = 1  # 100 px = 0.01 -> small, top right
    assert build_prompts("polyp", mask) == {
        "p0": "", "p1": "polyp.", "p2": "small polyp.",
        "p3": "one small polyp in the top right of the image.", "p4": "one small polyp in the top right of the image."}
    mask[40:60, 40:60] = 1  # + 400 px: 2 objects, 0.05 small, centre of mass (41, 53) -> center
    assert build_prompts("polyp", mask, "frontal view")["p4"] == \
        "two small polyps in the center of the image. Frontal view."
    big = np.zeros((100, 100), np.uint8)
    big[50:100, 0:70] = 1  # 0.35 -> large, bottom left... centre (74.5, 34.5): bottom, middle column
    assert build_prompts("left atrium", big)["p3"] == "one large left atrium in the bottom of the image."
    assert mask_facts(big[:, :30])["size"] == "large"
    medium = np.zeros((100, 100), np.uint8)
    medium[0:30, 0:30] = 1  # 0.09 -> medium
    assert mask_facts(medium)["size"] == "medium" and mask_facts(medium)["location"] == "top left"
    tiny = np.zeros((100, 100), np.uint8)
    tiny[99, 0] = 1  # 0.0001 -> tiny
    assert build_prompts("lung lesion", tiny)["p2"] == "tiny lung lesion."
    diagonal = np.eye(6, dtype=np.uint8)  # 8-connected: one object
    assert mask_facts(diagonal)["count"] == 1
    assert build_prompts("breast tumor", np.zeros((8, 8), np.uint8))["p3"] == "no breast tumor."


# ---------------------------------------------------------------- the ten datasets


def _install(name: str, fx, tmp_path: Path, serve, monkeypatch) -> Path:
    """Make the fixture's archives available like the real source: served (direct) or dropped (gated)."""
    spec = registry.REGISTRY[name]
    raw_dir = tmp_path / "raw"
    if spec.access == "direct":
        add, _ = serve
        files = []
        for f in spec.files:
            data = next(a for a in fx.archives if a.name == f.name).read_bytes()
            files.append(dataclasses.replace(f, url=add(f.name, data), sha256=hashlib.sha256(data).hexdigest()))
        monkeypatch.setitem(registry.REGISTRY, name, dataclasses.replace(spec, files=tuple(files)))
    else:
        with pytest.raises(FileNotFoundError, match=rf"{name}: missing .*{spec.files[0].name}.* in {raw_dir / name}"):
            obtain(name, raw_dir)
        for a in fx.archives:
            (raw_dir / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(a, raw_dir / name / a.name)
    return raw_dir


@pytest.fixture(scope="session")
def releases(tmp_path_factory):
    """Each fixture release built once per session (read-only: tests copy the archives before using them)."""
    built: dict[str, object] = {}

    def get(name: str):
        if name not in built:
            built[name] = BUILDERS[name](tmp_path_factory.mktemp(f"release_{name}"))
        return built[name]

    return get


@pytest.fixture(params=sorted(registry.REGISTRY))
def pipeline(request, tmp_path, serve, monkeypatch, releases):
    """(name, fixture, receipt, index dir, prepared dir, meta) for one registry dataset."""
    name = request.param
    if name not in BUILDERS:
        pytest.fail(f"registry entry {name!r} has no fixture builder in tests/data_fixtures.py BUILDERS")
    fx = releases(name)
    raw_dir = _install(name, fx, tmp_path, serve, monkeypatch)
    info = obtain(name, raw_dir, receipt=tmp_path / "receipt.json")
    assert json.loads((tmp_path / "receipt.json").read_text())["root"] == info["root"]
    assert [f["name"] for f in info["files"]] == [a.name for a in fx.archives]
    index_dataset(name, info["root"], tmp_path / "index")
    meta = prepare_dataset(tmp_path / "index", tmp_path / "prep", size=16, **prepare_settings({"source": name}))
    return name, fx, info, tmp_path / "index", tmp_path / "prep", meta


def test_every_registry_entry_has_a_fixture():
    assert sorted(BUILDERS) == sorted(registry.REGISTRY)


def test_dataset_pipeline(pipeline):
    name, fx, info, index, prep, meta = pipeline
    sizes = meta["split_sizes"]
    assert sum(sizes.values()) == fx.n_samples and min(sizes.values()) > 0, sizes
    for split, n in (fx.official or {}).items():
        assert sizes[split] == n, (split, sizes)
    manifest = read_csv(prep / "manifest.csv")
    assert {m["id"] for m in manifest} == set(fx.truth)
    split_of = {m["id"]: m["split"] for m in manifest}
    # every sample in the group it must have (patient, sequence, city, image; pixel-identical copies merged),
    # and no group spans splits
    assert {m["id"]: m["group"] for m in manifest} == fx.groups
    by_group: dict[str, set] = {}
    for sid, group in fx.groups.items():
        by_group.setdefault(group, set()).add(split_of[sid])
    assert all(len(s) == 1 for s in by_group.values())
    # the release's pixel-identical copies: found, in one split, listed; those with other masks listed with their IoU
    assert sorted(map(sorted, meta["duplicates"]["sets"])) == sorted(map(sorted, fx.duplicates))
    assert meta["n_duplicates_dropped"] == 0
    assert [tuple(c["samples"]) for c in meta["conflicting_masks"]] == fx.conflicts
    for c in meta["conflicting_masks"]:
        a, b = (fx.truth[i].astype(bool) for i in c["samples"])
        assert c["iou"] == round((a & b).sum() / (a | b).sum(), 4) < 1
    # prompts
    phrases = {m["p1"][:-1] for m in manifest}
    assert phrases <= PHRASES.get(name, phrases) and all(m["p0"] == "" and m["p1"].endswith(".") for m in manifest)
    for m in manifest:
        truth = fx.truth[m["id"]]
        assert m["p3"] == build_prompts(m["p1"], truth)["p3"]
        assert (int(m["orig_h"]), int(m["orig_w"])) == truth.shape
    # cached masks: binary, nearest resize of the original, original = the drawn mask
    for split in SPLITS:
        ps = PreparedSplit(prep, split)
        assert len(ps) == sizes[split] and ps.images.shape == (len(ps), 16, 16, 3)
        assert set(np.unique(ps.masks)) <= {0, 1}
    test = PreparedSplit(prep, "test")
    for i, sid in enumerate(test.ids):
        original = test.original_mask(i)
        assert set(np.unique(original)) <= {0, 1}
        nearest = np.asarray(Image.fromarray(original).resize((16, 16), Image.Resampling.NEAREST))
        assert np.array_equal(test.masks[i], nearest)
        truth = fx.truth[sid].astype(bool)
        if name in JPEG_MASKS:
            inter, union = (original.astype(bool) & truth).sum(), (original.astype(bool) | truth).sum()
            assert inter / union > 0.9, (sid, inter / union)
        else:
            assert np.array_equal(original, truth.astype(np.uint8)), sid


@pytest.mark.parametrize("policy", ["group", "fail", "drop"])
def test_dataset_leak_audit(pipeline, tmp_path, policy):
    """A test image planted over a train image of another group: grouped (default), or the audit fails, or
    drops and reports it."""
    name, fx, info, index, prep, meta = pipeline
    settings = prepare_settings({"source": name, "leak_policy": policy})
    assert settings["leak_policy"] == policy
    before = None  # what the policy makes of the release's own duplicates (BKAI, BUSI) without the planted one
    try:
        before = prepare_dataset(index, tmp_path / "before", size=16, **settings)
    except ValueError as e:
        assert policy == "fail" and fx.duplicates and "split leak" in str(e)
    manifest = read_csv((tmp_path / "before" if before else prep) / "manifest.csv")  # this policy's split
    copies = {sid for pair in fx.duplicates for sid in pair}
    test_row = next(m for m in manifest if m["split"] == "test" and m["id"] not in copies)
    train_row = next(m for m in manifest if m["split"] == "train" and m["group"] != test_row["group"]
                     and m["id"] not in copies and (m["orig_h"], m["orig_w"]) == (test_row["orig_h"], test_row["orig_w"]))
    src, dst = Path(test_row["source_image"]), Path(train_row["source_image"])
    shutil.copy(src, dst)
    if policy == "fail":
        planted = rf"split leak.*{train_row['id']}.*{test_row['id']}" if before else "split leak"
        with pytest.raises(ValueError, match=planted):
            prepare_dataset(index, tmp_path / "leak", size=16, **settings)
        assert not (tmp_path / "leak").exists()
        return
    leaked = prepare_dataset(index, tmp_path / "leak", size=16, **settings)
    after = {m["id"]: m for m in read_csv(tmp_path / "leak" / "manifest.csv")}
    official = any(r.get("split") for r in read_csv(index / "samples.csv"))
    if policy == "drop" or official:  # one copy dropped, listed
        # drop: the first copy (train) stays; group on an official split: the most held-out copy (test) stays
        kept, gone = (train_row, test_row) if policy == "drop" else (test_row, train_row)
        n_gone = sum(m["source_image"] == gone["source_image"] for m in manifest)  # samples sharing that image
        assert leaked["n_duplicates_dropped"] == before["n_duplicates_dropped"] + n_gone
        assert sum(leaked["split_sizes"].values()) == sum(before["split_sizes"].values()) - n_gone
        assert kept["id"] in after and gone["id"] not in after
        new_notes = [d for d in leaked["duplicates_dropped"] if d not in before["duplicates_dropped"]]
        assert len(new_notes) == n_gone and all(gone["source_image"] in d for d in new_notes)
    else:  # the two groups become one: same split, nothing lost
        assert leaked["n_duplicates_dropped"] == 0 and sum(leaked["split_sizes"].values()) == fx.n_samples
        assert after[test_row["id"]]["split"] == after[train_row["id"]]["split"]
        merged = min(test_row["group"], train_row["group"])
        assert after[test_row["id"]]["group"] == after[train_row["id"]]["group"] == merged
        assert sorted([test_row["group"], train_row["group"]]) in [sorted(m) for m in leaked["groups_merged"].values()]


def test_dataset_readers_decode_every_mask(pipeline):
    """Every 2-D row's mask, whatever its encoding (1-bit, RGB, RGBA, JPEG-noisy, anti-aliased), is the drawn one."""
    name, fx, info, index, prep, meta = pipeline
    for r in read_csv(index / "samples.csv"):
        if r.get("label"):
            continue  # NIfTI frames: compared in test_dataset_pipeline
        truth = fx.truth[r["id"]]
        mask = load_mask(index, r["mask"], r.get("mask_rule") or "", truth.shape)
        if name in JPEG_MASKS:
            assert (mask.astype(bool) & truth.astype(bool)).sum() / (mask.astype(bool) | truth.astype(bool)).sum() > 0.9
        else:
            assert np.array_equal(mask, truth), r["id"]


def _members(fx) -> dict[str, bytes]:
    out = {}
    for a in fx.archives:
        with zipfile.ZipFile(a) as zf:
            out.update({n: zf.read(n) for n in zf.namelist()})
    return out


def test_dataset_specific_layouts(pipeline):
    name, fx, info, index, prep, meta = pipeline
    manifest = read_csv(prep / "manifest.csv")
    rows = read_csv(index / "samples.csv")
    if name == "busi":  # stratified by class (a merged group counts in its first row's class)
        for cls in ("benign", "malignant", "normal"):
            stratum = [m for m in manifest if m["group"].startswith(cls)]
            counts = [sum(m["split"] == s for m in stratum) for s in SPLITS]
            assert all(abs(c - f * len(stratum)) <= 2 for c, f in zip(counts, (0.8, 0.1, 0.1))), (cls, counts)
        assert {r["mask_rule"] for r in rows if r["id"] == "normal_0010"} == {"empty"}
        assert sum(";" in r["mask"] for r in rows) == 6  # every third tumour image has 2 masks
        assert {m["p3"] for m in manifest if m["id"].startswith("normal")} == {"no breast tumor."}
        modes = {Image.open(io.BytesIO(b)).mode for n, b in _members(fx).items() if "_mask" in n}
        assert modes == {"1", "L", "RGB", "RGBA"}
    elif name == "bkai":
        heights = {int(m["orig_h"]) for m in manifest}
        assert min(heights) == 959 and max(heights) == 1024 and {int(m["orig_w"]) for m in manifest} == {1280}
        masks = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for n, b in _members(fx).items()
                 if n.startswith("train_gt/")]
        both = sum(bool((m[..., 0] > 127).any() and (m[..., 1] > 127).any()) for m in masks)
        assert 0 < both < len(masks)
        noisy = masks[0][(masks[0].max(-1) > 0) & (masks[0].max(-1) < 255)]
        assert noisy.size > 0  # JPEG fringes: values neither 0 nor 255
        assert all(r["image"].endswith(".jpeg") for r in rows)
    elif name == "clinicdb":  # grouped by video sequence, PNGs only (the TIFs are unreadable)
        assert {r["group"] for r in rows} == {f"seq{sequence_of(int(r['id'].split('_')[1])):02d}" for r in rows}
        assert len({r["group"] for r in rows}) == 11 and len(rows) == 15
        tif = next(Path(info["root"]).rglob("TIF/Original/1.tif"))
        with pytest.raises(Image.UnidentifiedImageError):
            Image.open(tif)
        assert all(r["image"].endswith(".png") for r in rows)
        grey = {int(v) for n, b in _members(fx).items() if n.startswith("PNG/Ground Truth/")
                for v in np.unique(np.asarray(Image.open(io.BytesIO(b))))}
        assert Image.open(tif.parents[2] / "PNG" / "Ground Truth" / "1.png").mode == "RGB" and len(grey - {0, 255}) > 10
    elif name == "kvasir":
        assert {Image.open(p).mode for p in Path(info["root"]).rglob("Kvasir-SEG/masks/*.jpg")} == {"RGB"}
        assert next(Path(info["root"]).rglob("kavsir_bboxes.json")).is_file() and len(rows) == fx.n_samples
    elif name == "camus":  # official patient split (separate zip), one sample per structure, view and phase in p4
        split_lists = {s: f"subgroup_{n}.txt" for s, n in (("train", "training"), ("val", "validation"),
                                                           ("test", "testing"))}
        root = Path(info["root"])
        assert [f["name"] for f in info["files"]] == ["CAMUS_public.zip", "database_split.zip"]
        for split, fname in split_lists.items():
            patients = set(next(root.rglob(fname)).read_text().split())
            assert {m["group"] for m in manifest if m["split"] == split} == patients
        m = next(m for m in manifest if m["id"] == "patient0001_4CH_ES_3")
        assert m["p1"] == "left atrium." and m["p4"].endswith("Four-chamber view at end-systole.")
        assert not any("half_sequence" in r["image"] or "Info_" in r["image"] for r in rows)
        assert len(list(root.rglob("MANDATORY_CITATION.md"))) == 3 and len(list(root.rglob("Info_2CH.cfg"))) == 6
    elif name == "chexlocalize":
        assert {m["p4"].rsplit(". ", 1)[-1] for m in manifest} == {"Frontal view.", "Lateral view."}
        assert all(m["group"] == m["id"].split("_")[0] for m in manifest)
        assert "airspace opacity." in {m["p1"] for m in manifest}
        assert {Path(r["image"]).parts[-4] for r in rows} == {"val", "test"}
    elif name in ("voc2012", "cityscapes"):  # official val = our test; validation carved from train
        official_val = {r["group"] for r in rows if r["split"] == "test"}
        assert {m["group"] for m in manifest if m["split"] == "test"} == official_val
        assert not official_val & {m["group"] for m in manifest if m["split"] == "val"}
    elif name == "isic2016":
        assert {m["id"] for m in manifest if m["split"] == "test"} == {f"ISIC_{k:07d}" for k in range(10, 14)}


def _index_of(name: str, tmp_path: Path, **build) -> tuple[object, Path, Path]:
    """Build a fixture variant, obtain and index it: (fixture, extracted root, index dir)."""
    fx = BUILDERS[name](tmp_path / "release", **build)
    info = obtain(name, tmp_path / "raw", archive=str(tmp_path / "release"))
    index_dataset(name, info["root"], tmp_path / "index")
    return fx, Path(info["root"]), tmp_path / "index"


def test_clinicdb_sequences_from_metadata_or_the_frame_table(tmp_path):
    assert [sequence_of(f) for f in (1, 25, 26, 50, 51, 67, 68, 205, 206, 591, 592, 612)] == \
        [1, 1, 2, 2, 3, 3, 4, 10, 11, 28, 29, 29]
    with pytest.raises(ValueError, match="frames 1-612, not 613"):
        sequence_of(613)
    fx, root, index = _index_of("clinicdb", tmp_path / "table", metadata=False)  # no metadata.csv: the table
    assert {r["id"]: r["group"] for r in read_csv(index / "samples.csv")} == fx.groups
    # metadata.csv, when present, decides: here it puts frames 1-3 and 26-27 into one sequence 7
    fx, root, index = _index_of("clinicdb", tmp_path / "meta")
    meta_csv = next(root.rglob("metadata.csv"))
    lines = meta_csv.read_text().splitlines()
    lines = [ln.rsplit(",", 1)[0] + ",7" if ln.split(",")[0].split("/")[-1] in {"1.png", "2.png", "3.png", "26.png",
                                                                                  "27.png"} else ln for ln in lines]
    meta_csv.write_text("\n".join(lines) + "\n")
    info_root = root
    index_dataset("clinicdb", info_root, tmp_path / "index2")
    groups = {r["id"]: r["group"] for r in read_csv(tmp_path / "index2" / "samples.csv")}
    assert {groups[f"clinicdb_{i}"] for i in (1, 2, 3, 26, 27)} == {"seq07"} and groups["clinicdb_51"] == "seq03"
    meta_csv.write_text("png_image_path,sequence_id\nPNG/Original/1.png,1\n")
    with pytest.raises(ValueError, match=r"PNG/Original/\d+\.png is not listed in .*metadata\.csv"):
        index_dataset("clinicdb", info_root, tmp_path / "index3")
    meta_csv.unlink()
    (next(root.rglob("PNG/Original")) / "1.png").rename(next(root.rglob("PNG/Original")) / "first.png")
    (next(root.rglob("PNG/Ground Truth")) / "1.png").rename(next(root.rglob("PNG/Ground Truth")) / "first.png")
    with pytest.raises(ValueError, match=r"cannot place .*first\.png in a video sequence"):
        index_dataset("clinicdb", info_root, tmp_path / "index4")


@pytest.mark.parametrize("parts", [("val",), ("test",)])
def test_chexlocalize_one_part_only(tmp_path, parts, caplog):
    fx, root, index = _index_of("chexlocalize", tmp_path, parts=parts)
    assert "only %s annotations found" % parts[0] in caplog.text or f"only {parts[0]} annotations" in caplog.text
    rows = read_csv(index / "samples.csv")
    assert {r["id"] for r in rows} == set(fx.truth) and {Path(r["image"]).parts[-4] for r in rows} == set(parts)
    meta = prepare_dataset(index, tmp_path / "prep", size=16, **prepare_settings({"source": "chexlocalize"}))
    assert sum(meta["split_sizes"].values()) == len(fx.truth) and min(meta["split_sizes"].values()) > 0
    manifest = read_csv(tmp_path / "prep" / "manifest.csv")
    patients = {}
    for m in manifest:
        patients.setdefault(m["group"], set()).add(m["split"])
    assert len(patients) == 10 and all(len(s) == 1 for s in patients.values())


def test_chexlocalize_real_format_facts(tmp_path):
    fx, root, index = _index_of("chexlocalize", tmp_path)
    path = next(root.rglob("gt_annotations_val.json"))
    annotations = json.loads(path.read_text())
    cxr = "patient64541_study1_view1_frontal"
    annotations[cxr]["Lung Opacity"] = annotations[cxr].pop("Airspace Opacity")  # the CheXpert header's name
    path.write_text(json.dumps(annotations))
    rows = {r["id"]: r for r in (index_dataset("chexlocalize", root, tmp_path / "i2") and
                                 read_csv(tmp_path / "i2" / "samples.csv"))}
    assert rows[f"{cxr}_airspace_opacity"]["phrase"] == "airspace opacity"
    polygons = json.loads((tmp_path / "i2" / rows[f"{cxr}_airspace_opacity"]["mask"]).read_text())
    assert polygons["size"] == [H, W]  # img_size is (height, width)
    annotations[cxr]["Pneumonia"] = [[[1, 1], [5, 1], [5, 5]]]
    path.write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match=r"gt_annotations_val\.json: .* unknown pathology 'Pneumonia'"):
        index_dataset("chexlocalize", root, tmp_path / "i3")
    for p in root.rglob("gt_annotations_*.json"):
        p.unlink()
    with pytest.raises(ValueError, match="neither gt_annotations_val.json nor gt_annotations_test.json"):
        index_dataset("chexlocalize", root, tmp_path / "i4")


def test_camus_without_the_split_zip(tmp_path, caplog):
    fx, root, index = _index_of("camus", tmp_path, n=10, split_zip=False)
    assert "no database_split/" in caplog.text
    rows = read_csv(index / "samples.csv")
    assert {r["split"] for r in rows} == {""}
    meta = prepare_dataset(index, tmp_path / "prep", size=16, **prepare_settings({"source": "camus"}))
    manifest = read_csv(tmp_path / "prep" / "manifest.csv")
    by_patient = {}
    for m in manifest:
        by_patient.setdefault(m["group"], set()).add(m["split"])
    assert len(by_patient) == 10 and all(len(s) == 1 for s in by_patient.values())
    assert meta["split_sizes"] == {"train": 96, "val": 12, "test": 12}  # seeded 80/10/10 of whole patients (12 samples)


# ---------------------------------------------------------------- published splits (medvlsm anns/*.json)


def _write_anns(folder: Path, records: dict[str, list[dict]]) -> Path:
    (folder / "anns").mkdir(parents=True)
    for split, recs in records.items():
        (folder / "anns" / f"{split}.json").write_text(json.dumps(recs))
    return folder


def test_published_splits_and_prompts(pipeline, tmp_path):
    """medvlsm-style annotation files decide the split and the prompts; the leak audit still reports."""
    name, fx, info, index, prep, meta = pipeline
    ids = sorted(fx.truth)
    if medvlsm_names(name, ids[0]) is None:  # no published files for this dataset; by image name is ambiguous
        records = [{"img_name": Path(fx.image_of[ids[0]]).name, "mask_name": "x.png", "prompts": {"p0": ""}}]
        folder = _write_anns(tmp_path / "anns_src", {s: records for s in SPLITS})
        with pytest.raises(ValueError, match="samples share this image .*needs a published_id rule"):
            prepare_dataset(index, tmp_path / "pub", size=16, **prepare_settings({"source": name,
                                                                                  "annotations": str(folder)}))
        return
    split_of = {sid: ("train", "train", "train", "val", "test")[i % 5] for i, sid in enumerate(ids)}
    for a, b in fx.duplicates:  # the release's copies in different published splits: a leak to report
        split_of[a], split_of[b] = "train", "test"
    unlisted, twice = ids[1], ids[2]
    records = {s: [] for s in SPLITS}
    for sid in ids:
        if sid == unlisted:
            continue
        img, mask = medvlsm_names(name, sid)
        rec = {"bbox": [0, 0, 1, 1], "cat": 0, "segment_id": sid, "img_name": img, "mask_name": mask,
               "prompts": {"p0": "", "p1": f"{sid} published", "p2": [f"{sid} first.", f"{sid} second"],
                           "p10": "ten"}}
        records[split_of[sid]].append(rec)
        if sid == twice:
            records["test"].append(rec)
    folder = _write_anns(tmp_path / "medvlsm" / name, records)
    settings = prepare_settings({"source": name, "annotations": str(folder)})
    assert annotation_files({"annotations": str(folder)}) == [str(folder / "anns" / f"{s}.json") for s in SPLITS]
    meta = prepare_dataset(index, tmp_path / "pub", size=16, **settings)
    manifest = read_csv(tmp_path / "pub" / "manifest.csv")
    first_split, split_of[twice] = split_of[twice], "test"  # listed twice: kept in the most held-out split
    assert {m["id"]: m["split"] for m in manifest} == {sid: s for sid, s in split_of.items() if sid != unlisted}
    assert list(manifest[0])[-4:] == ["p0", "p1", "p2", "p10"] and meta["prompt_keys"] == ["p0", "p1", "p2", "p10"]
    for m in manifest:  # lists keep their first phrasing; a final "." is added
        assert (m["p0"], m["p1"], m["p2"], m["p10"]) == ("", f"{m['id']} published.", f"{m['id']} first.", "ten.")
    pub = meta["published"]
    assert pub["n_unlisted"] == 1 and pub["records"] == {s: len(r) for s, r in records.items()}
    assert pub["listed_twice"] == [{"id": twice, "listed_in": [first_split, "test"], "kept_in": "test"}]
    assert len(pub["leaks"]) == len(fx.duplicates)  # reported, not moved
    for (a, b), leak in zip(sorted(fx.duplicates, key=lambda p: p[1]), sorted(pub["leaks"])):
        assert leak.startswith(f"{b} (") and f"duplicates {a} (" in leak
    assert PreparedSplit(tmp_path / "pub", "test", prompt_key="p10").prompts[0] == "ten."
    if fx.duplicates:  # fail still refuses a published split with a leak
        with pytest.raises(ValueError, match="split leak"):
            prepare_dataset(index, tmp_path / "pub2", size=16, **{**settings, "leak_policy": "fail"})
    # another dataset's annotation file: no record matches, the file is named
    other = "clinicdb" if name != "clinicdb" else "kvasir"
    wrong = [{"img_name": "9999.png" if other == "clinicdb" else "cju9999.jpg", "mask_name": "m.png",
              "prompts": {"p0": ""}}]
    folder = _write_anns(tmp_path / "wrong", {s: wrong for s in SPLITS})
    with pytest.raises(ValueError, match=r"wrong/anns/train\.json: 1 of 1 records match no sample"):
        prepare_dataset(index, tmp_path / "pub3", size=16, **prepare_settings({"source": name,
                                                                               "annotations": str(folder)}))


def test_published_ids_of_real_medvlsm_names():
    """Record -> sample id on names as the medvlsm files spell them (data/<dataset>/anns/test.json)."""
    from tunevlseg.data.sources import busi, camus, chexlocalize

    assert busi.published_id({"img_name": "102_malignant.png"}) == "malignant_0102"
    assert camus.published_id({"img_name": "patient0001_2CH_ED.png",
                               "mask_name": "mask_2/patient0001_2CH_ED_gt.png"}) == "patient0001_2CH_ED_2"
    assert chexlocalize.published_id({"img_name": "patient64832_study1_view2_lateral.jpg",
                                      "mask_name": "patient64832_study1_view2_lateral_airspace_opacity.png"}) == \
        "patient64832_study1_view2_lateral_airspace_opacity"


# ---------------------------------------------------------------- bad input


def _gated_ready(name: str, tmp_path: Path):
    fx = BUILDERS[name](tmp_path / "release")
    for a in fx.archives:
        (tmp_path / "raw" / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(a, tmp_path / "raw" / name / a.name)
    info = obtain(name, tmp_path / "raw")
    index_dataset(name, info["root"], tmp_path / "index")
    return fx, Path(info["root"])


def test_bad_images_and_masks_name_the_file(tmp_path):
    fx, root = _gated_ready("dfu2022", tmp_path)
    image = next(root.rglob("100003.jpg"))
    good = image.read_bytes()
    image.write_bytes(good[:150])
    with pytest.raises(ValueError, match=r"100003\.jpg is unreadable or truncated"):
        prepare_dataset(tmp_path / "index", tmp_path / "prep", size=16)
    image.write_bytes(good)
    mask = next(root.rglob("100005.png"))
    Image.new("L", (W + 2, H)).save(mask)
    with pytest.raises(ValueError, match=r"size mismatch: mask .*100005\.png is 42x32 but its image is 40x32"):
        prepare_dataset(tmp_path / "index", tmp_path / "prep", size=16)
    Image.fromarray(np.full((H, W), 77, np.uint8)).save(mask)
    with pytest.raises(ValueError, match=r"100005\.png is not binary: values \[77\]"):
        prepare_dataset(tmp_path / "index", tmp_path / "prep", size=16)
    assert not (tmp_path / "prep").exists()


def test_threshold_mask_without_a_clear_pixel_is_refused(tmp_path):
    """A Kvasir-style mask uniformly 128 (or all within 16 of 127) used to become all foreground."""
    kfx = BUILDERS["kvasir"](tmp_path / "k")
    info = obtain("kvasir", tmp_path / "raw", archive=str(kfx.archives[0]))
    index_dataset("kvasir", info["root"], tmp_path / "kindex")
    mask = next(Path(info["root"]).rglob("Kvasir-SEG/masks/*.jpg"))
    Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(mask, "JPEG", quality=75)
    with pytest.raises(ValueError, match=rf"mask {mask}: every value lies in \[128, 128\], within 16 of the "
                                         rf"threshold 127: no pixel is clearly foreground or background"):
        prepare_dataset(tmp_path / "kindex", tmp_path / "kprep", size=16, **prepare_settings({"source": "kvasir"}))
    assert not (tmp_path / "kprep").exists()
    for values, ok in (((111, 143), False), ((110, 143), True), ((111, 144), True), ((0, 128), True)):
        Image.fromarray(np.array([[values[0], values[1]] * (W // 2)] * H, np.uint8)).save(mask.with_suffix(".png"))
        if ok:
            assert load_mask(mask.parent, mask.with_suffix(".png").name, "threshold:127", (H, W)).shape == (H, W)
        else:
            with pytest.raises(ValueError, match=r"every value lies in \[111, 143\]"):
                load_mask(mask.parent, mask.with_suffix(".png").name, "threshold:127", (H, W))
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 120  # a BKAI-style mask whose red and green are all near the threshold
    Image.fromarray(rgb).save(mask.with_suffix(".rgb.png"))
    with pytest.raises(ValueError, match=r"every value lies in \[120, 120\]"):
        load_mask(mask.parent, mask.with_suffix(".rgb.png").name, "channels:127:0,1", (H, W))


def test_obtain_verifies_present_archives_every_run(tmp_path, serve, monkeypatch):
    # gated: a <file>.sha256 beside the archive, or the registry's value, is checked on every run
    fx = BUILDERS["busi"](tmp_path / "raw" / "busi")
    archive = fx.archives[0]
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert obtain("busi", tmp_path / "raw")["files"][0]["sha256"] == digest
    record = archive.with_name("archive.zip.sha256")
    record.write_text("0" * 64 + "  archive.zip\n")
    with pytest.raises(ValueError, match=rf"archive\.zip: sha256 {digest} does not match 0{{64}} recorded in "
                                         rf"{record}"):
        obtain("busi", tmp_path / "raw")
    record.write_text(digest + "\n")
    assert obtain("busi", tmp_path / "raw")["files"][0]["sha256"] == digest
    spec = registry.REGISTRY["busi"]
    monkeypatch.setitem(registry.REGISTRY, "busi", dataclasses.replace(
        spec, files=(dataclasses.replace(spec.files[0], sha256="f" * 64),)))
    with pytest.raises(ValueError, match="does not match f{64} recorded in the registry"):
        obtain("busi", tmp_path / "raw")
    monkeypatch.setitem(registry.REGISTRY, "busi", spec)
    # a gated archive replaced at the same path (no record): extracted again, the receipt has the new hash
    record.unlink()
    root = Path(obtain("busi", tmp_path / "raw")["root"])
    BUILDERS["busi"](tmp_path / "newer", seed=99)
    shutil.copy(tmp_path / "newer" / "archive.zip", archive)
    info = obtain("busi", tmp_path / "raw")
    assert info["files"][0]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest() != digest
    assert (root / "archive.sha256").read_text().strip() == info["files"][0]["sha256"]
    # direct: the recorded sha256 of an earlier download is checked even when the file is already there
    add, _ = serve
    kfx = BUILDERS["kvasir"](tmp_path / "k")
    url = add("kvasir-seg.zip", kfx.archives[0].read_bytes())
    kspec = registry.REGISTRY["kvasir"]
    monkeypatch.setitem(registry.REGISTRY, "kvasir", dataclasses.replace(
        kspec, files=(dataclasses.replace(kspec.files[0], url=url, sha256=None),)))
    obtain("kvasir", tmp_path / "raw")
    downloaded = tmp_path / "raw" / "kvasir" / "kvasir-seg.zip"
    assert (downloaded.parent / "kvasir-seg.zip.sha256").is_file()  # trust on first use
    downloaded.write_bytes(downloaded.read_bytes() + b"tampered")
    with pytest.raises(ValueError, match=r"kvasir-seg\.zip: sha256 .* does not match .* recorded in .*kvasir-seg\.zip\.sha256"):
        obtain("kvasir", tmp_path / "raw")


def test_release_files_are_the_obtain_rule_inputs(tmp_path):
    raw = tmp_path / "raw"
    assert release_files({"source": "busi"}, raw) == []  # missing: obtain reports it with the instructions
    fx = BUILDERS["busi"](raw / "busi")
    assert release_files({"source": "busi"}, raw) == [str(fx.archives[0])]
    assert release_files({"source": "busi", "archive": str(fx.archives[0])}, tmp_path / "elsewhere") == \
        [str(fx.archives[0])]
    assert release_files({"source": "busi", "archive": str(tmp_path / "nowhere.zip")}, raw) == []
    extracted = Path(obtain("busi", raw)["root"])
    assert release_files({"source": "busi", "archive": str(extracted)}, raw) == []  # an extracted copy
    cfx = BUILDERS["camus"](raw / "camus")
    assert release_files({"source": "camus"}, raw) == [str(a) for a in cfx.archives]  # + the optional split zip
    (raw / "camus" / "database_split.zip").unlink()
    assert release_files({"source": "camus"}, raw) == [str(cfx.archives[0])]
    assert release_files({"source": "kvasir"}, raw) == [] and release_files({"source": "synthetic"}, raw) == []
    assert annotation_files({"source": "busi"}) == []


def test_empty_wrong_and_unsafe_archives(tmp_path):
    folder = tmp_path / "raw" / "clinicdb"
    folder.mkdir(parents=True)
    zipfile.ZipFile(folder / "archive.zip", "w").close()
    with pytest.raises(ValueError, match=r"archive\.zip is empty"):
        obtain("clinicdb", tmp_path / "raw")
    BUILDERS["kvasir"](tmp_path / "k")  # a Kvasir archive where the ClinicDB one belongs
    shutil.copy(tmp_path / "k" / "kvasir-seg.zip", folder / "archive.zip")
    info = obtain("clinicdb", tmp_path / "raw")
    with pytest.raises(ValueError, match=r"no folder 'PNG/Original' found; is this the CVC-ClinicDB release"):
        index_dataset("clinicdb", info["root"], tmp_path / "index")
    assert not (tmp_path / "index").exists()
    with zipfile.ZipFile(folder / "archive.zip", "w") as zf:
        zf.writestr("PNG/Original/1.png", b"x")
        zf.writestr("../../escaped.txt", b"evil")
    with pytest.raises(ValueError, match=r"archive\.zip: refusing path with '\.\.' component '\.\./\.\./escaped\.txt'"):
        obtain("clinicdb", tmp_path / "raw")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_archive_override_and_extracted_copy(tmp_path):
    fx = BUILDERS["busi"](tmp_path / "elsewhere")
    info = obtain("busi", tmp_path / "raw", archive=str(fx.archives[0]))
    assert Path(info["root"]) == (tmp_path / "raw" / "busi" / "extracted").resolve()
    assert info["files"][0]["path"] == str(fx.archives[0])
    # an already extracted copy on shared storage is used in place
    copy = Path(info["root"]) / "archive"
    info2 = obtain("busi", tmp_path / "raw2", archive=str(copy))
    assert info2["root"] == str(copy.resolve()) and info2["files"] == []
    assert index_dataset("busi", info2["root"], tmp_path / "index")["n_rows"] == 30
    with pytest.raises(FileNotFoundError, match=r"busi: archive .*nowhere\.zip .*does not exist.*kaggle"):
        obtain("busi", tmp_path / "raw", archive=str(tmp_path / "nowhere.zip"))


# ---------------------------------------------------------------- status and CLI


def test_status_lines_and_cli(tmp_path, capsys):
    results, raw = tmp_path / "results", tmp_path / "raw"
    cfg = {"source": "camus"}
    line = dataset_status("camus", cfg, results, raw)
    assert line.startswith("camus (camus): missing;") and "CAMUS_public.zip" in line and str(raw / "camus") in line
    assert "downloads it" in dataset_status("kvasir", {"source": "kvasir"}, results, raw)
    fx = BUILDERS["camus"](raw / "camus")
    assert "raw present" in dataset_status("camus", cfg, results, raw)
    config = tmp_path / "config.yaml"
    config.write_text(f"results: {results}\nraw_dir: {raw}\ndatasets:\n  camus: {{source: camus}}\n"
                      f"  kvasir: {{source: kvasir}}\n")
    receipt = results / "sources" / "camus.json"
    assert cli_main(["data", "obtain", "--source", "camus", "--raw-dir", str(raw), "--out", str(receipt)]) == 0
    assert cli_main(["data", "index", "--receipt", str(receipt), "--out", str(results / "index" / "camus")]) == 0
    meta = prepare_dataset(results / "index" / "camus", results / "prepared" / "camus" / "352", size=16,
                           **prepare_settings(cfg))
    capsys.readouterr()
    assert cli_main(["data", "status", "--configfile", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"camus (camus): prepared: 352px train/val/test 48/12/12 manifest "
                        f"{manifest_hash(results / 'prepared' / 'camus' / '352')[:12]}")
    assert meta["split_sizes"] == {"train": 48, "val": 12, "test": 12} and len(fx.truth) == 72
    digests = [hashlib.sha256(a.read_bytes()).hexdigest() for a in fx.archives]  # CAMUS_public + database_split
    assert [f["sha256"] for f in meta["index"]["files"]] == digests  # provenance of the release
    assert lines[1].startswith("kvasir (kvasir): missing")
    # a gated dataset whose archive is missing: one clear line, exit 1
    assert cli_main(["data", "obtain", "--source", "busi", "--raw-dir", str(raw), "--out", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunevlseg data: error: busi: missing archive.zip") and err.count("\n") == 1
    assert cli_main(["data", "obtain", "--source", "nope", "--raw-dir", str(raw), "--out", "x"]) == 1
    assert "unknown dataset source 'nope'" in capsys.readouterr().err


def test_prepare_settings_defaults():
    assert prepare_settings({"source": "synthetic", "split_seed": 3}) == {"split_fractions": [0.7, 0.15, 0.15], "seed": 3}
    s = prepare_settings({"source": "camus"})
    assert s == {"split_fractions": [0.8, 0.1, 0.1], "window": [0, 255], "seed": 0}
    s = prepare_settings({"source": "isic2016", "split_fractions": [0.8, 0.2, 0.0], "leak_policy": "drop",
                          "annotations": "/data/isic"})
    assert s == {"split_fractions": [0.8, 0.2, 0.0], "val_fraction": 0.1, "seed": 0, "leak_policy": "drop",
                 "annotations": "/data/isic"}
    assert set(s) <= set(inspect.signature(prepare_dataset).parameters)
    with pytest.raises(KeyError, match="unknown dataset source 'nope'"):
        prepare_settings({"source": "nope"})


def test_registry_schema_and_readme_agree():
    """The schema's sources are the registry's, and the dataset table of docs/how-to/real-datasets.md has a row
    per registered dataset that agrees with it (access, file name)."""
    import yaml

    repo = Path(__file__).resolve().parents[3]
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    sources = schema["properties"]["datasets"]["additionalProperties"]["properties"]["source"]["enum"]
    from tunevlseg.data.local import LOCAL_SOURCES

    assert sorted(sources) == sorted(["synthetic", *registry.REGISTRY, *LOCAL_SOURCES])
    page = (repo / "docs" / "how-to" / "real-datasets.md").read_text()
    for spec in registry.REGISTRY.values():
        row = next((line for line in page.splitlines() if line.startswith(f"| {spec.id} |")), None)
        assert row is not None, spec.id
        assert spec.access == "direct" and "fetched" in row or spec.access == "gated" and "fetched" not in row
        if len(spec.files) == 1:
            assert f"`{spec.files[0].name}`" in row
        assert all(f.url is None for f in spec.files) == (spec.access == "gated")


def test_parallel_preparation_matches_serial(tmp_path):
    """Rows sharing an image go to one worker task; the cache is identical with 1 or 2 workers."""
    fx, _ = _gated_ready("camus", tmp_path)
    settings = prepare_settings({"source": "camus"})
    one = prepare_dataset(tmp_path / "index", tmp_path / "one", size=16, workers=1, **settings)
    two = prepare_dataset(tmp_path / "index", tmp_path / "two", size=16, workers=2, **settings)
    assert one["manifest_sha256"] == two["manifest_sha256"] and one["split_sizes"] == two["split_sizes"]
    for split in SPLITS:
        assert np.array_equal(np.load(tmp_path / "one" / f"{split}_images.npy"),
                              np.load(tmp_path / "two" / f"{split}_images.npy"))
    assert sum(one["split_sizes"].values()) == len(fx.truth)
