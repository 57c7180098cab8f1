"""The paper preset plans its whole grid without downloading anything, and replaces the demo config."""

from __future__ import annotations

import json
import re
import time

import pytest

from tunevlseg.methods import METHODS

from .test_workflow import REPO, snakemake

PRESET = REPO / "workflow" / "presets" / "paper.yaml"


def test_paper_preset_plans_80_cells_with_paper_settings(tmp_path):
    started = time.perf_counter()
    out = snakemake(tmp_path, "-n", "-p", "--configfile", str(PRESET), timeout=300)
    seconds = time.perf_counter() - started
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    stats = text.split("Job stats:")[1].split("Reasons:")[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    assert jobs["tune"] == 80 and jobs["obtain"] == 10 and jobs["prepare"] == 20  # 10 datasets × 2 sizes
    assert jobs["retrain"] == 80 * 2  # final_seeds 3: the best trial + 2 replicates per cell
    assert jobs["features"] == 20  # one frozen-feature cache per (model, dataset): CoOp and CoCoOp share it
    assert "synth" not in jobs and "pretrain_standin" not in jobs  # nothing of the demo leaks in
    settings = [json.loads(m.group(1)) for m in re.finditer(r"tunevlseg tune .*?--settings '(\{.*?\})'", text)]
    assert len(settings) == 80
    by_cell = {(s["model"], s["method"]): s for s in settings}
    assert set(by_cell) == {("clipseg", m) for m in ("coop", "cocoop", "vpt", "maple", "shared_attention",
                                                    "shared_separate")} | {("cris", "coop"), ("cris", "cocoop")}
    for (model, method), s in by_cell.items():
        assert s["n_trials"] == 20 and s["search"] == METHODS[method].search, (model, method)
        assert s["fixed"] == METHODS[method].fixed, (model, method)  # the reference's semantics
        assert s["pruner"] == "none" and s["training"]["cache_views"] == 0  # the paper's protocol
    assert not (tmp_path / "results").exists()
    print(f"paper preset dry run: {seconds:.1f} s")  # target ≤ 10 s (shown with pytest -s)


def test_fast_preset_is_an_overlay_that_prunes_and_stores_views(tmp_path):
    """paper.yaml + fast.yaml: the same 80 cells, with the median pruner and 3 stored augmented views."""
    fast = REPO / "workflow" / "presets" / "fast.yaml"
    out = snakemake(tmp_path, "-n", "-p", "--configfile", str(PRESET), str(fast), timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    settings = [json.loads(m.group(1)) for m in re.finditer(r"tunevlseg tune .*?--settings '(\{.*?\})'", text)]
    assert len(settings) == 80
    assert all(s["pruner"] == "median" and s["training"]["cache_views"] == 3 for s in settings)
    features = [json.loads(m.group(1)) for m in re.finditer(r"tunevlseg features .*?--settings '(\{.*?\})'", text)]
    assert len(features) == 20 and all(f["views"] == 3 for f in features)
    cached = [m.group(1) for m in re.finditer(r"tunevlseg tune .*?--out results/cells/\w+/(\w+)/\w+ .*?--features",
                                              text)]
    assert sorted(set(cached)) == ["cocoop", "coop"] and len(cached) == 40



@pytest.mark.parametrize("epochs", [2, None])
def test_the_rules_settings_are_the_effective_settings_and_epochs_reach_finetune(tmp_path, epochs):
    """A quick-run overlay on the paper preset: training.epochs reaches fine-tuning (the catalogue's 40 yields
    to a value the config sets, not to the schema's default 20), a partial search keeps the catalogue's other
    keys, and every tune job's settings are tunevlseg.config.cell_settings of the config as validated."""
    import yaml
    from snakemake.utils import update_config

    from tunevlseg import config as cfg

    depth = {"type": "int", "low": 1, "high": 3}
    overlay = {"benchmark": {"models": ["clipseg"], "methods": ["coop", "finetune", "maple"], "datasets": ["kvasir"]},
               "methods": {"maple": {"search": {"depth": depth}}}}
    if epochs:
        overlay["training"] = {"epochs": epochs}
    quick = tmp_path / "quick.yaml"
    quick.write_text(yaml.safe_dump(overlay))
    out = snakemake(tmp_path, "-n", "-p", "--configfile", str(PRESET), str(quick), timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    settings = [json.loads(m.group(1)) for m in re.finditer(r"tunevlseg tune .*?--settings '(\{.*?\})'", text)]
    by_method = {s["method"]: s for s in settings}
    assert sorted(by_method) == ["coop", "finetune", "maple"]
    assert {m: s["training"]["epochs"] for m, s in by_method.items()} == (
        {"coop": 2, "finetune": 2, "maple": 2} if epochs else {"coop": 20, "finetune": 40, "maple": 20})
    assert by_method["finetune"]["search"] == METHODS["finetune"].search
    assert by_method["maple"]["search"] == {**METHODS["maple"].search, "depth": depth}
    assert by_method["maple"]["fixed"] == METHODS["maple"].fixed
    config = yaml.safe_load(PRESET.read_text())
    update_config(config, overlay)
    cfg.validate_workflow_config(config)
    for method, s in by_method.items():
        assert s == json.loads(json.dumps(cfg.cell_settings(config, "clipseg", method, "kvasir"))), method
