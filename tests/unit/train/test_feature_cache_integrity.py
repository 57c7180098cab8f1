"""The frozen-feature cache is keyed by the weights' content, never half-written, and a damaged one is
named and rebuilt: weights replaced in place, truncated or changed files, a full disk, killed builds."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import TINY_ARCH, TINY_WORDS
from tunevlseg import config as cfg
from tunevlseg import features as features_module
from tunevlseg.cli import main
from tunevlseg.data.cache import PreparedSplit
from tunevlseg.features import DamagedCacheError, FeatureCache
from tunevlseg.models.registry import load_adapter
from tunevlseg.models.standin import build_standin, build_tokenizer, save_standin
from tunevlseg.study import fingerprint, weights_identity
from tunevlseg.tune import CellRunner, CellSpec

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """Tiny tensors: intra-op threads only add synchronisation."""


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("tissue", n=24, seed=3)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """A second tiny CLIPSeg (another seed): same files, other values."""
    torch.manual_seed(1)
    tokenizer = build_tokenizer(TINY_WORDS)
    out = tmp_path_factory.mktemp("other_clipseg")
    save_standin(build_standin(TINY_ARCH, tokenizer), tokenizer, out)
    return out


@pytest.fixture
def weights(tiny_model_dir, tmp_path):
    """A local weights folder of the test's own (its files get replaced in place)."""
    return shutil.copytree(tiny_model_dir, tmp_path / "weights")


def build(prepared, weights, out) -> int:
    settings = dict(model="clipseg", weights=str(weights), model_options={}, dtype="float32", views=0, seed=0,
                    batch_size=8, device="cpu", amp=False)
    return main(["features", "--prepared", str(prepared), "--out", str(out), "--settings", json.dumps(settings)])


def spec(weights, n_trials: int = 2) -> CellSpec:
    return CellSpec(model="clipseg", method="coop", dataset="tissue", weights=str(weights), n_trials=n_trials,
                    search=SPACE, device="cpu",
                    training={"epochs": 2, "batch_size": 8, "progress": False, "amp": False, "cache_dtype": "float32"})


def replace_in_place(weights, other_weights) -> None:
    """Overwrite the weights file's content: same path, same size."""
    shutil.copyfile(other_weights / "model.safetensors", weights / "model.safetensors")


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tunevlseg ")]
    assert len(lines) == 1, lines
    return lines[0]


def live_features(weights, prepared, index: int) -> tuple[torch.Tensor, ...]:
    adapter = load_adapter("clipseg", str(weights)).eval()
    image = torch.from_numpy(np.array(PreparedSplit(prepared, "train").images[index])).permute(2, 0, 1)[None]
    with torch.no_grad():
        feats = adapter.encode_image(adapter.normalize(image.float() / 255), None, pooled=True)
    return tuple(t[0] for t in feats.tensors())


# ------------------------------------------------------------------------- weights replaced in place
def test_weights_replaced_in_place_make_the_cache_stale_and_the_rebuild_holds_the_new_features(
        weights, other_weights, prepared, tmp_path):
    cache = tmp_path / "features"
    assert build(prepared, weights, cache) == 0
    old = FeatureCache(cache).split("train").read(5)
    CellRunner(spec(weights), prepared, tmp_path / "cell", cache)  # accepted
    replace_in_place(weights, other_weights)
    with pytest.raises(DamagedCacheError, match=r"features: computed for other weights content than .*weights "
                                                r"\(changed since: model.safetensors\); moved it to .*features.damaged-"):
        CellRunner(spec(weights), prepared, tmp_path / "cell", cache)
    assert not cache.exists() and len(list(tmp_path.glob("features.damaged-*"))) == 1

    assert build(prepared, weights, cache) == 0
    assert not list(tmp_path.glob("features.damaged-*"))  # the rebuild removed the stale copy
    new = FeatureCache(cache, checksums=True).split("train").read(5)
    for stored, live, stale in zip(new, live_features(weights, prepared, 5), old, strict=True):
        torch.testing.assert_close(stored, live, rtol=1e-5, atol=1e-6)  # the new weights' features
        assert (stored - stale).abs().max() > 0.05  # not the old ones
    CellRunner(spec(weights), prepared, tmp_path / "cell", cache)  # accepted again


def test_a_moved_weights_folder_keeps_its_cache(weights, prepared, tmp_path):
    """The cache is keyed by content, not by the path string."""
    assert build(prepared, weights, tmp_path / "features") == 0
    moved = shutil.move(weights, tmp_path / "moved")
    FeatureCache(tmp_path / "features").check("clipseg", str(moved), prepared)


def test_the_superseded_study_retrains_on_the_new_weights_features(weights, other_weights, prepared, tmp_path):
    """Weights replaced after a cell ran: the cell refuses the old cache without touching its study; on the
    rebuilt cache the study is superseded and its new trials are those of an uncached cell on the new weights."""
    cache, cell = tmp_path / "features", tmp_path / "cell"
    assert build(prepared, weights, cache) == 0
    CellRunner(spec(weights), prepared, cell, cache).run()
    before = pd.read_csv(cell / "trials.csv")
    replace_in_place(weights, other_weights)
    with pytest.raises(DamagedCacheError, match="computed for other weights content"):
        CellRunner(spec(weights), prepared, cell, cache).run()
    assert not (cell / "superseded").exists() and pd.read_csv(cell / "trials.csv").equals(before)

    assert build(prepared, weights, cache) == 0
    cached = CellRunner(spec(weights), prepared, cell, cache).run()
    assert len(list((cell / "superseded").iterdir())) == 1
    plain = CellRunner(spec(weights), prepared, tmp_path / "plain").run()
    for col in ("val_dice", "test_dice_mean"):
        assert cached[col].tolist() == pytest.approx(plain[col].tolist(), abs=1e-5), col
    assert cached["test_dice_mean"].tolist() != pytest.approx(before["test_dice_mean"].tolist(), abs=1e-4)


def test_the_features_rule_param_follows_the_weights_content(weights, other_weights):
    """rules/tune.smk `features`: params.weights_id changes when a local weights file is replaced in place."""
    config = {"models": {"clipseg": {"weights": str(weights)}}}
    before = cfg.weights_trigger(config, "clipseg")
    assert before == cfg.weights_trigger(config, "clipseg") == fingerprint(weights_identity(str(weights)))
    replace_in_place(weights, other_weights)
    after = cfg.weights_trigger(config, "clipseg")
    assert after != before and len(after) == 64
    assert cfg.weights_trigger({"models": {"m": {"weights": "standin"}}}, "m") == ""
    assert cfg.weights_trigger({"models": {"m": {"weights": "CIDAS/clipseg-rd64-refined"}}}, "m") == ""


# ------------------------------------------------------------------------- damaged caches
def test_a_truncated_cache_file_is_one_line_naming_it_and_the_rerun_rebuilds_it(weights, prepared, tmp_path,
                                                                                capsys):
    cache = tmp_path / "features"
    assert build(prepared, weights, cache) == 0
    reference = FeatureCache(cache).split("val").read(2)
    path = cache / "train_map1.npy"
    size = path.stat().st_size
    os.truncate(path, size // 2)
    capsys.readouterr()
    settings = json.dumps(dataclasses.asdict(spec(weights)))
    assert main(["tune", "--prepared", str(prepared), "--out", str(tmp_path / "cell"), "--features", str(cache),
                 "--settings", settings]) == 1
    line = error_line(capsys)
    assert f"feature cache {cache}: train_map1.npy is {size // 2:,} bytes, expected {size:,} (truncated or " \
           "damaged); moved it to" in line, line
    assert not cache.exists()
    assert build(prepared, weights, cache) == 0  # what the workflow's rerun does: the output is missing
    for a, b in zip(FeatureCache(cache, checksums=True).split("val").read(2), reference, strict=True):
        assert torch.equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "weights"]


def test_a_file_cut_short_while_in_use_is_an_error_naming_it_not_a_sigbus(weights, prepared, tmp_path):
    cache = tmp_path / "features"
    assert build(prepared, weights, cache) == 0
    split = FeatureCache(cache).split("train")
    assert split.read_batch(np.arange(4), np.zeros(4, np.int64))[-1].shape[0] == 4
    os.truncate(cache / "train_pooled.npy", 200)
    with pytest.raises(DamagedCacheError, match=r"train_pooled.npy ends before image row \d+ of view 0 \(cut short"):
        split.read_batch(np.arange(4), np.zeros(4, np.int64))
    assert not cache.exists()


def test_a_changed_byte_fails_the_checksum_naming_the_file(weights, prepared, tmp_path):
    cache = tmp_path / "features"
    assert build(prepared, weights, cache) == 0
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["files"]["test_map0.npy"]["bytes"] == (cache / "test_map0.npy").stat().st_size
    with open(cache / "test_map0.npy", "r+b") as fh:
        fh.seek(-3, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-3, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 0x40]))
    FeatureCache(cache)  # same sizes: the cheap check passes
    with pytest.raises(DamagedCacheError, match="test_map0.npy does not match its sha256 in meta.json"):
        FeatureCache(cache, checksums=True)


# ------------------------------------------------------------------------- writing
def test_too_little_free_space_is_one_line_with_both_numbers_and_leaves_nothing(weights, prepared, tmp_path,
                                                                               monkeypatch, capsys):
    real = shutil.disk_usage
    monkeypatch.setattr(features_module.shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    out = tmp_path / "out" / "features"
    assert build(prepared, weights, out) == 1
    line = error_line(capsys)
    needed = int(line.split("needs ")[1].split(" bytes")[0].replace(",", ""))
    assert line == (f"tunevlseg features: error: features: not enough free space for the feature cache in "
                    f"{out.parent}: needs {needed:,} bytes, 1,000 free")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # nothing left behind
    monkeypatch.undo()
    assert build(prepared, weights, out) == 0
    written = json.loads((out / "meta.json").read_text())["bytes"]
    assert written <= needed <= written + features_module.SPACE_MARGIN  # the estimate is the arrays' size


@pytest.mark.parametrize("where", ["fallocate", "pwrite"])
def test_a_full_disk_is_one_line_never_a_sigbus_and_leaves_no_tmp_folder(weights, prepared, tmp_path, monkeypatch,
                                                                         capsys, where):
    """ENOSPC from the preallocation (or, where a file system cannot preallocate, from a write)."""
    calls = []

    def full(*args):
        calls.append(args)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    if where == "fallocate":
        real = os.posix_fallocate
        monkeypatch.setattr(features_module.os, "posix_fallocate", full)
    else:
        real = os.pwrite
        monkeypatch.setattr(features_module.os, "posix_fallocate",
                            lambda *a: (_ for _ in ()).throw(OSError(errno.EOPNOTSUPP, "not supported")))
        monkeypatch.setattr(features_module.os, "pwrite", full)
    out = tmp_path / "out" / "features"
    assert build(prepared, weights, out) == 1
    line = error_line(capsys)
    assert line.startswith(f"tunevlseg features: error: features: the disk of {out.parent} is full (writing "
                           "train_map1.npy): the cache needs "), line  # the 2nd file preallocated / written
    assert line.endswith("free; nothing was kept")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # nothing left behind


def test_folders_left_by_killed_builds_are_removed_by_the_next(weights, prepared, tmp_path, caplog):
    out = tmp_path / "features"
    for name in ("features.tmp-k1ll3d", "features.old-x", "features.damaged-20260101T000000-1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train_map0.npy").write_bytes(b"x" * 100)
    (tmp_path / "features-other.tmp-keep").mkdir()  # not this cache's
    assert build(prepared, weights, out) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "features-other.tmp-keep", "weights"]
    assert "features.tmp-k1ll3d (100 bytes) left by an earlier run" in caplog.text
