"""tunevlseg estimate: the grid arithmetic, the sample counts, the random full-size models, the printed table."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from tunevlseg import estimate
from tunevlseg.estimate import PairTiming, cell_cost, estimate_from_config, parse_samples, sample_counts
from tunevlseg.models.registry import REGISTRY

REPO = Path(__file__).resolve().parents[3]


def test_cell_cost_is_trials_times_epochs_times_steps_plus_evaluation():
    t = PairTiming("clipseg", "coop", batch=2, step_s=1.0, cached_step_s=0.1, eval_img_s=0.2,
                   cached_eval_img_s=0.01, encode_img_s=0.05)
    training = {"batch_size": 4, "epochs": 3, "augment": True, "cache_views": 0}
    tuning = {"n_trials": 5, "final_seeds": 3}
    seconds, step = cell_cost(t, training, tuning, (10, 4, 6), cached=False, tuned=True)
    assert step == 2.0  # 1 s at batch 2 → 2 s at batch 4
    one = 3 * (math.ceil(10 / 4) * 2.0 + 4 * 0.2) + 6 * 0.2
    assert seconds == pytest.approx((5 + 2) * one)  # 5 trials + 2 more seeds of the best
    seconds, step = cell_cost(t, training, tuning, (10, 4, 6), cached=True, tuned=True)
    assert step == pytest.approx(0.2 + 0.36 * 4 * 0.05)  # + live encoding of the changed 36 %
    assert seconds == pytest.approx(7 * (3 * (3 * step + 4 * 0.01) + 6 * 0.01))
    _, step = cell_cost(t, {**training, "cache_views": 2}, tuning, (10, 4, 6), cached=True, tuned=True)
    assert step == pytest.approx(0.2)  # stored views: nothing encoded live
    seconds, _ = cell_cost(t, training, tuning, (10, 4, 6), cached=False, tuned=False)
    assert seconds == pytest.approx(10 * 0.2)  # zero-shot: one evaluation of val + test


def test_sample_counts_prefer_prepared_data(make_prepared, tmp_path):
    prepared = make_prepared("shapes", n=10, seed=1)
    results = tmp_path / "results"
    (results / "prepared" / "shapes").mkdir(parents=True)
    (results / "prepared" / "shapes" / "32").symlink_to(prepared)
    config = {"results": str(results), "datasets": {"shapes": {"source": "synthetic", "synthetic": {"n": 10}},
                                                  "kvasir": {"source": "kvasir"}, "mine": {"source": "busi"}}}
    counts, images, source = sample_counts(config, "shapes", 32, {})
    assert source == "prepared" and sum(counts) == 20 and images == counts[0] // 2  # two samples per image
    assert sample_counts(config, "kvasir", 352, {}) == ((800, 100, 100), 800, "approx.")
    assert sample_counts(config, "mine", 352, parse_samples(["mine=7,2,1"]))[0] == (7, 2, 1)
    with pytest.raises(ValueError, match="expected DATASET=TRAIN,VAL,TEST"):
        parse_samples(["mine=7,2"])


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m == "sam3" else m for m in REGISTRY])
def test_every_model_has_a_random_full_size_architecture(model):
    adapter = estimate.RANDOM_FULL_SIZE[model]({"image_size": 64})
    dims = adapter.dims
    if model == "clipseg":  # rd64-refined: ViT-B/16, reduce_dim 64, extract layers 3, 6, 9, refined decoder
        cfg = adapter.model.config
        assert (cfg.vision_config.patch_size, cfg.vision_config.hidden_size, cfg.reduce_dim) == (16, 768, 64)
        assert list(cfg.extract_layers) == [3, 6, 9] and cfg.use_complex_transposed_convolution
        assert dims.max_vision_depth == 10
    elif model == "cris":  # CRIS-R50
        assert adapter.model.cfg.layers == (3, 4, 6, 3) and dims.image_feature_dim == 1024
    else:  # facebook/sam3 (840 M parameters: slow), at 56 px, the multiple of its 14 px patch below 64
        assert (dims.max_text_depth, dims.text_width, dims.image_feature_dim) == (24, 1024, 1024)
        assert sum(p.numel() for p in adapter.model.parameters()) == 840_376_374
        assert adapter.image_size == 56
        with torch.no_grad():
            assert adapter(torch.rand(1, 3, 56, 56), adapter.tokenize(["polyp."])).shape == (1, 1, 56, 56)
        return
    assert dims.max_text_depth == 12 and dims.text_width == 512
    with torch.no_grad():
        logits = adapter(torch.rand(1, 3, 64, 64), adapter.tokenize(["polyp."]))
    assert logits.shape == (1, 1, 64, 64)


def test_estimate_prints_a_row_per_cell_and_the_total(tmp_path, monkeypatch, one_thread):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["benchmark"].update(methods=["zeroshot", "coop", "vpt"], datasets=["newlook"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(estimate, "load_config", lambda p: _with_defaults(yaml.safe_load(Path(p).read_text())))
    lines = []
    total = estimate_from_config(path, steps=1, device="cpu", out=lines.append)
    rows = [line.split() for line in lines if line.split() and line.split()[0] in REGISTRY]
    cells = [r for r in rows if r[1] != "(features)"]
    assert {(r[0], r[1]) for r in cells} == {("clipseg", "zeroshot"), ("clipseg", "coop"), ("clipseg", "vpt"),
                                            ("cris", "zeroshot"), ("cris", "coop")}
    features = [r for r in rows if r[1] == "(features)"]
    assert {r[0] for r in features} == {"clipseg", "cris"}  # one cache per model and dataset
    coop = next(r for r in cells if r[:2] == ["clipseg", "coop"])
    assert coop[-4] == "yes" and coop[-5] == str(config["tuning"]["n_trials"] + 1)  # trials + 1 more seed
    hours = [float(r[-3]) for r in cells] + [float(r[-2]) for r in features]
    assert sum(hours) == pytest.approx(total, abs=0.01 * len(rows))
    assert all(0.3 < float(r[-2]) < 2.0 for r in cells)  # peak GB of a stand-in job: runtime + a tiny model
    disk = [float(r[-1]) for r in cells] + [float(r[-1]) for r in features]
    assert re.fullmatch(r"disk: \d+\.\d\d GB kept .*", lines[-2]) and float(lines[-2].split()[1]) == \
        pytest.approx(sum(disk), abs=0.05 * len(rows))
    assert re.fullmatch(r"total: \d+\.\d CPU-hours", lines[-1])
    assert "random clipseg stand-in" in "\n".join(lines)


def _with_defaults(config):
    from snakemake.utils import validate

    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    config["tuning"]["final_seeds"] = 2  # the lead's key (multi-seed retraining): not in this schema yet
    return config


def _bad_configs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = (REPO / "config.yaml").read_text()
    cases = {"syntax": ("a: [1,\n", "line 2, column 1: not valid YAML"),
             "schema": (good.replace("training:\n  epochs: 8\n  batch_size: 32", "training:\n  epochs: 8\n  batch_size: -4"),
                        "training.batch_size: -4 is less than the minimum of 1"),
             "method": (good.replace("methods: [zeroshot, coop", "methods: [zeroshot, cop"),
                        "benchmark.methods.1: 'cop' is not one of"),
             "reference": (good.replace("\n  newword:", "\n  newword2:"), "benchmark.datasets: unknown dataset 'newword'")}
    out = {}
    for name, (text, expected) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        out[name] = (path, expected)
    out["missing"] = (tmp_path / "missing.yaml", "missing.yaml: file: not found")
    return out


@pytest.mark.parametrize("case", ["syntax", "schema", "method", "reference", "missing"])
def test_a_bad_config_is_one_line_naming_file_and_key(case, tmp_path, capsys):
    from tunevlseg import cli

    path, expected = _bad_configs(tmp_path)[case]
    assert cli.main(["estimate", "--configfile", str(path), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tunevlseg estimate: error: {path}") and expected in err[0], err


@pytest.mark.parametrize("option, value", [("--steps", "0"), ("--steps", "-3"), ("--batch-size", "0"),
                                           ("--steps", "two")])
def test_out_of_range_numbers_are_refused_by_argparse(option, value, capsys):
    from tunevlseg import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["estimate", option, value])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"tunevlseg estimate: error: argument {option}: ")
    assert ("must be from 1 to" in last and f"got {value}" in last) or "not an integer: 'two'" in last


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_step_memory_separates_the_fixed_part_from_the_part_per_image():
    """A step holding 40 MB per image and 64 MB besides: measured through the process's resident set."""
    from tunevlseg.estimate import step_memory

    def step_at(n):
        fixed = torch.ones(64 * 2**20 // 4)
        per_image = torch.ones(n * 40 * 2**20 // 4)
        return float(fixed[0] + per_image[0])

    fixed, per_image = step_memory(step_at, 2, torch.device("cpu"))
    assert per_image == pytest.approx(40, abs=6) and fixed == pytest.approx(64, abs=20)


def test_time_pair_measures_the_checkpoint_and_the_step_memory(tiny_adapter, one_thread):
    params_mb = sum(p.numel() * 4 for p in tiny_adapter.model.parameters()) / 2**20
    finetune = estimate.time_pair(tiny_adapter, "finetune", 32, 2, 1, torch.device("cpu"), evaluation=False)
    coop = estimate.time_pair(tiny_adapter, "coop", 32, 2, 1, torch.device("cpu"), evaluation=False)
    assert finetune.trainable_mb == pytest.approx(params_mb, rel=0.01)  # the whole model: a full checkpoint
    assert 0 < coop.trainable_mb < 0.01 * params_mb  # the prompt tensors
    assert coop.features_mb_per_image > 0 and finetune.step_mb_per_image >= 0
    if Path("/proc/self/clear_refs").exists():
        assert finetune.step_fixed_mb + 2 * finetune.step_mb_per_image > 0


def test_disk_keeps_full_checkpoints_of_the_best_trial_and_replicates_only():
    t = PairTiming("cris", "finetune", 2, 1.0, trainable_mb=560.0)
    tuning = {"n_trials": 20, "final_seeds": 3}
    assert estimate.cell_disk_mb(t, True, True, tuning) == (3 * 560.0, 4 * 560.0)  # best + 2 replicates
    prompts = PairTiming("cris", "coop", 2, 1.0, trainable_mb=0.01)
    assert estimate.cell_disk_mb(prompts, False, True, tuning) == pytest.approx((22 * 0.01, 0.03))  # every run
    assert estimate.cell_disk_mb(prompts, False, False, tuning) == (0.0, 0.0)


def test_cell_memory_is_the_model_plus_the_step_at_the_configured_batch():
    from tunevlseg.config import RUNTIME_MB, WORKER_MB

    t = PairTiming("cris", "finetune", 2, 1.0, weights_mb=560.0, step_fixed_mb=2000.0, step_mb_per_image=566.0)
    training = {"batch_size": 32, "num_workers": 2}
    cpu = estimate.cell_memory_mb(t, training, True, cuda=False)
    assert cpu == 2 * 560 + 2000 + 32 * 566 + RUNTIME_MB + 5 * WORKER_MB  # 21.7 GiB
    assert estimate.cell_memory_mb(t, training, True, cuda=True) == 2 * 560 + 2000 + 32 * 566


def test_estimate_reads_overlays_the_sam3_preset_among_them(tmp_path, one_thread):
    """``--configfile A B`` as Snakemake merges it: the SAM 3 preset on paper.yaml adds its text-side cells; an
    overlay of ``models.sam3: {weights: standin}`` alone is timed on the registry's stand-in."""
    paper = estimate.load_config(REPO / "workflow/presets/paper.yaml", REPO / "workflow/presets/sam3.yaml")
    assert paper["models"]["sam3"] == {"weights": "facebook/sam3", "image_size": 1008}
    assert paper["benchmark"]["models"] == ["clipseg", "cris", "sam3"]
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["benchmark"].update(models=["cris"], methods=["zeroshot", "coop"], datasets=["newlook"])
    base, overlay = tmp_path / "base.yaml", tmp_path / "sam3.yaml"
    base.write_text(yaml.safe_dump(config))
    overlay.write_text(yaml.safe_dump({"models": {"sam3": {"weights": "standin"}}, "benchmark": {"models": ["sam3"]}}))
    lines = []
    estimate_from_config([base, overlay], steps=1, device="cpu", out=lines.append)
    cells = {(r[0], r[1]) for r in map(str.split, lines) if r and r[0] in REGISTRY and r[1] != "(features)"}
    assert cells == {("sam3", "zeroshot"), ("sam3", "coop")}
    assert "random sam3 stand-in" in "\n".join(lines) and f"{base} + {overlay}" in lines[0]
