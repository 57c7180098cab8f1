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

from tests.data_fixtures import BUILDERS, H, W
from tunevlseg.cli import main as cli_main
from tunevlseg.data import registry
from tunevlseg.data.cache import PreparedSplit, manifest_hash
from tunevlseg.data.fetch import download, safe_extract
from tunevlseg.data.ingest import dataset_status, index_dataset, obtain, prepare_settings
from tunevlseg.data.prepare import prepare_dataset
from tunevlseg.data.prompts import build_prompts, mask_facts

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


@pytest.fixture(params=sorted(BUILDERS))
def pipeline(request, tmp_path, serve, monkeypatch):
    """(name, fixture, receipt, index dir, prepared dir, meta) for one dataset."""
    name = request.param
    fx = BUILDERS[name](tmp_path / "release")
    raw_dir = _install(name, fx, tmp_path, serve, monkeypatch)
    info = obtain(name, raw_dir, receipt=tmp_path / "receipt.json")
    assert json.loads((tmp_path / "receipt.json").read_text())["root"] == info["root"]
    assert [f["name"] for f in info["files"]] == [f.name for f in registry.REGISTRY[name].files]
    index_dataset(name, info["root"], tmp_path / "index")
    meta = prepare_dataset(tmp_path / "index", tmp_path / "prep", size=16, **prepare_settings({"source": name}))
    return name, fx, info, tmp_path / "index", tmp_path / "prep", meta


def test_dataset_pipeline(pipeline):
    name, fx, info, index, prep, meta = pipeline
    sizes = meta["split_sizes"]
    assert sum(sizes.values()) == fx.n_samples and min(sizes.values()) > 0, sizes
    for split, n in (fx.official or {}).items():
        assert sizes[split] == n, (split, sizes)
    manifest = read_csv(prep / "manifest.csv")
    assert {m["id"] for m in manifest} == set(fx.truth)
    split_of = {m["id"]: m["split"] for m in manifest}
    # groups (patients, images, cities) never span splits
    by_group: dict[str, set] = {}
    for sid, group in fx.groups.items():
        by_group.setdefault(group, set()).add(split_of[sid])
    assert all(len(s) == 1 for s in by_group.values())
    # prompts
    phrases = {m["p1"][:-1] for m in manifest}
    assert phrases <= PHRASES.get(name, phrases) and all(m["p0"] == "" and m["p1"].endswith(".") for m in manifest)
    for m in manifest:
        truth = fx.truth[m["id"]]
        assert m["p3"] == build_prompts(m["p1"], truth)["p3"]
        assert (int(m["orig_h"]), int(m["orig_w"])) == truth.shape == (H, W)
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


def test_dataset_leak_audit(pipeline, tmp_path):
    """A test image planted over a train image of another group: the audit fails, or drops and reports it."""
    name, fx, info, index, prep, meta = pipeline
    manifest = read_csv(prep / "manifest.csv")
    test_row = next(m for m in manifest if m["split"] == "test")
    train_row = next(m for m in manifest if m["split"] == "train" and m["group"] != test_row["group"])
    src, dst = Path(test_row["source_image"]), Path(train_row["source_image"])
    shutil.copy(src, dst)
    with pytest.raises(ValueError, match=rf"split leak.*{train_row['id']}.*{test_row['id']}"):
        prepare_dataset(index, tmp_path / "leak", size=16, **prepare_settings({"source": name}))
    assert not (tmp_path / "leak").exists()
    settings = prepare_settings({"source": name, "leak_policy": "drop"})
    assert settings["drop_duplicates"] is True
    leaked = prepare_dataset(index, tmp_path / "leak", size=16, **settings)
    n_same_image = sum(m["source_image"] == str(src) for m in manifest)  # samples sharing the test image
    assert leaked["n_duplicates_dropped"] == n_same_image
    assert sum(leaked["split_sizes"].values()) == fx.n_samples - n_same_image
    assert all(test_row["source_image"] in d or str(dst) in d for d in leaked["duplicates_dropped"])


def test_dataset_specific_layouts(pipeline):
    name, fx, info, index, prep, meta = pipeline
    manifest = read_csv(prep / "manifest.csv")
    rows = read_csv(index / "samples.csv")
    if name == "busi":  # stratified by class: 8/1/1 of each class
        for cls in ("benign", "malignant", "normal"):
            counts = [sum(m["split"] == s and m["id"].startswith(cls) for m in manifest) for s in SPLITS]
            assert counts == [8, 1, 1], (cls, counts)
        assert {r["mask_rule"] for r in rows if r["id"] == "normal_0010"} == {"empty"}
        assert sum(";" in r["mask"] for r in rows) == 6  # every third tumour image has 2 masks
        assert {m["p3"] for m in manifest if m["id"].startswith("normal")} == {"no breast tumor."}
    elif name == "camus":  # official patient split, one sample per structure, view and phase in p4
        split_lists = {s: f"subgroup_{n}.txt" for s, n in (("train", "training"), ("val", "validation"),
                                                           ("test", "testing"))}
        root = Path(info["root"])
        for split, fname in split_lists.items():
            patients = set(next(root.rglob(fname)).read_text().split())
            assert {m["group"] for m in manifest if m["split"] == split} == patients
        m = next(m for m in manifest if m["id"] == "patient0001_4CH_ES_3")
        assert m["p1"] == "left atrium." and m["p4"].endswith("Four-chamber view at end-systole.")
        assert not any(r["image"].endswith("half_sequence.nii.gz") for r in rows)
    elif name == "chexlocalize":
        assert {m["p4"].rsplit(". ", 1)[-1] for m in manifest} == {"Frontal view.", "Lateral view."}
        assert all(m["group"] == m["id"].split("_")[0] for m in manifest)
    elif name in ("voc2012", "cityscapes"):  # official val = our test; validation carved from train
        official_val = {r["group"] for r in rows if r["split"] == "test"}
        assert {m["group"] for m in manifest if m["split"] == "test"} == official_val
        assert not official_val & {m["group"] for m in manifest if m["split"] == "val"}
    elif name == "isic2016":
        assert {m["id"] for m in manifest if m["split"] == "test"} == {f"ISIC_{k:07d}" for k in range(10, 14)}


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
    digest = hashlib.sha256(fx.archives[0].read_bytes()).hexdigest()
    assert [f["sha256"] for f in meta["index"]["files"]] == [digest]  # provenance of the release
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
    s = prepare_settings({"source": "isic2016", "split_fractions": [0.8, 0.2, 0.0], "leak_policy": "drop"})
    assert s == {"split_fractions": [0.8, 0.2, 0.0], "val_fraction": 0.1, "seed": 0, "drop_duplicates": True}
    with pytest.raises(KeyError, match="unknown dataset source 'nope'"):
        prepare_settings({"source": "nope"})


def test_registry_schema_and_readme_agree():
    import yaml

    repo = Path(__file__).resolve().parents[3]
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    sources = schema["properties"]["datasets"]["additionalProperties"]["properties"]["source"]["enum"]
    assert sorted(sources) == sorted(["synthetic", *registry.REGISTRY])
    readme = (repo / "README.md").read_text()
    for spec in registry.REGISTRY.values():
        row = next((line for line in readme.splitlines() if line.startswith(f"| {spec.id} |")), None)
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
