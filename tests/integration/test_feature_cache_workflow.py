"""Snakemake reruns `features` when a local weights file is replaced in place, and when a cell moved a damaged
or stale cache aside (tunevlseg.features): the dry run lists it, a real run rebuilds it."""

from __future__ import annotations

import shutil

import torch

from tests.integration.test_workflow import planned_jobs, reduced_config, snakemake, write_config
from tunevlseg.features import FeatureCache, quarantine
from tunevlseg.models.registry import build_standin
from tunevlseg.models.standin import build_tokenizer

TARGET = "results/features/clipseg/newlook/64"


def save_weights(cfg: dict, folder, seed: int) -> None:
    """A random CLIPSeg of the demo stand-in's architecture, saved like public weights."""
    standin = cfg["models"]["clipseg"]["standin"]
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(standin["vocabulary"], max_length=standin["arch"].get("max_text_length", 32))
    build_standin("clipseg", standin["arch"], tokenizer).save(folder)


def test_weights_replaced_in_place_or_a_cache_moved_aside_rerun_features(tmp_path):
    cfg = reduced_config()
    cfg["benchmark"].update(models=["clipseg"], methods=["coop"], datasets=["newlook"])
    cfg["models"]["clipseg"]["weights"] = str(tmp_path / "weights")
    write_config(tmp_path, cfg)
    save_weights(cfg, tmp_path / "weights", seed=0)
    save_weights(cfg, tmp_path / "other", seed=1)
    out = snakemake(tmp_path, TARGET, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert planned_jobs(tmp_path, TARGET) == {}
    before = FeatureCache(tmp_path / TARGET).meta["weights_identity"]

    shutil.copyfile(tmp_path / "other" / "model.safetensors", tmp_path / "weights" / "model.safetensors")
    assert planned_jobs(tmp_path, TARGET) == {"features": 1}
    out = snakemake(tmp_path, TARGET, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert FeatureCache(tmp_path / TARGET, checksums=True).meta["weights_identity"] != before
    assert planned_jobs(tmp_path, TARGET) == {}

    quarantine(tmp_path / TARGET, "test")  # what a cell does with a damaged or stale cache
    assert planned_jobs(tmp_path, TARGET) == {"features": 1}
