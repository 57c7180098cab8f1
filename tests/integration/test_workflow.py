"""The whole demo workflow on a reduced config in a temporary folder (never touches results/).

One module-scoped run, then checks of what a rerun schedules.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tunevlseg.models.registry import supports

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TIMEOUT = 900


def reduced_config() -> dict:
    """The demo config shrunk to seconds per job."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["datasets"]["shapes"]["synthetic"]["n"] = 160
    cfg["datasets"]["newlook"]["synthetic"]["n"] = 60
    cfg["datasets"]["newword"]["synthetic"]["n"] = 60
    cfg["datasets"]["ctvolumes"]["synthetic"]["n"] = 6
    for model in cfg["models"].values():
        model["standin"].update(epochs=2, min_grounding_gap=-1.0)
    cfg["tuning"]["n_trials"] = 2
    cfg["training"].update(epochs=2, batch_size=16)
    return cfg


def snakemake(workdir: Path, *args: str, timeout: int = TIMEOUT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run snakemake bounded by a timeout (SIGINT first: it can ignore SIGTERM); ``env``: extra variables."""
    cmd = ["timeout", "-s", "INT", "-k", "30", str(timeout), str(SNAKEMAKE), "--snakefile",
           str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Job counts per rule of a dry run ({} when nothing is to be done)."""
    out = snakemake(workdir, "-n", *args, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("Reasons:")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def grid_rows(cfg: dict) -> list[tuple[str, str]]:
    """(model, method) pairs of the grid: every combination the model supports."""
    bench = cfg["benchmark"]
    return [(m, k) for m in bench["models"] for k in bench["methods"] if supports(m, k)]


def write_config(workdir: Path, cfg: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def workdir_config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "config.yaml").read_text())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    cfg = reduced_config()
    write_config(workdir, cfg)
    out = snakemake(workdir)
    assert out.returncode == 0, f"snakemake failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return workdir, cfg


def test_table_has_every_cell(demo_run):
    workdir, cfg = demo_run
    table = pd.read_csv(workdir / "results/tables/dice.csv")
    bench = cfg["benchmark"]
    assert len(table) == len(grid_rows(cfg))
    for dataset in bench["datasets"]:
        values = table[f"{dataset}_mean"]
        assert values.notna().all() and values.between(0, 1).all(), dataset
    md = (workdir / "results/tables/dice.md").read_text()
    assert "clipseg · zeroshot" in md and "clipseg · vpt" in md and "—" not in md
    assert "cris · coop" in md and "cris · cocoop" in md and "cris · vpt" not in md  # no vision tokens
    for fig in ("dice_heatmap.png", "depth_vs_dice.png"):
        assert (workdir / "results/figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cell_outputs_and_provenance(demo_run):
    workdir, cfg = demo_run
    cell = workdir / "results/cells/clipseg/vpt/newlook"
    trials = pd.read_csv(cell / "trials.csv")
    assert (trials["state"] == "COMPLETE").sum() == cfg["tuning"]["n_trials"]
    assert trials["depth"].between(1, 4).all()
    prov = yaml.safe_load((cell / "provenance.json").read_text())
    assert len(prov["manifest_sha256"]) == 64 and len(prov["source_sha256"]) == 64
    assert prov["cell"]["n_trials"] == cfg["tuning"]["n_trials"] and prov["seeds"]["trials"]
    for _, row in trials.iterrows():
        trial_dir = cell / "trials" / f"{row['trial']:03d}"
        assert (trial_dir / "best.pt").stat().st_size < 100_000  # trainable parameters only
        with np.load(trial_dir / "examples.npz") as examples:  # the report's qualitative panel
            assert examples["prob"].shape == examples["gt"].shape and len(examples["ids"]) >= 1
        assert len(pd.read_csv(trial_dir / "epochs.csv")) >= 1
        per_image = pd.read_csv(trial_dir / "test_metrics.csv")
        assert len(per_image) == row["n_test"] > 0
        assert per_image["dice"].mean() == pytest.approx(row["test_dice_mean"])


def test_rerun_schedules_nothing_then_only_the_deleted_cell(demo_run):
    workdir, _ = demo_run
    assert planned_jobs(workdir) == {}
    shutil.rmtree(workdir / "results/cells/clipseg/coop/ctvolumes")
    extra_seeds = workdir_config(workdir)["tuning"]["final_seeds"] - 1
    assert planned_jobs(workdir) == {"tune": 1, "retrain": extra_seeds, "aggregate": 1, "all": 1}
    out = snakemake(workdir)  # restore the cell for the tests that follow
    assert out.returncode == 0, out.stderr[-4000:]
    assert planned_jobs(workdir) == {}


def test_plot_option_reruns_only_aggregation(demo_run):
    workdir, cfg = demo_run
    changed = copy.deepcopy(cfg)
    changed["report"]["dpi"] = 90
    write_config(workdir, changed)
    try:
        assert planned_jobs(workdir) == {"aggregate": 1, "all": 1}
    finally:
        write_config(workdir, cfg)


def test_new_dataset_schedules_only_its_cells(demo_run):
    workdir, cfg = demo_run
    changed = copy.deepcopy(cfg)
    changed["datasets"]["tissue_b"] = {"source": "synthetic", "synthetic": {"kind": "tissue", "n": 40, "seed": 99}}
    changed["benchmark"]["datasets"].append("tissue_b")
    write_config(workdir, changed)
    try:
        jobs = planned_jobs(workdir)
    finally:
        write_config(workdir, cfg)
    n_models = len({cfg["models"][m]["image_size"] for m in cfg["benchmark"]["models"]})  # one cache per size
    assert jobs.get("synth") == 1 and jobs.get("prepare") == n_models and jobs.get("pretrain_standin") is None
    assert jobs["tune"] == len(grid_rows(cfg))
    tuned_rows = [k for _, k in grid_rows(cfg) if k != "zeroshot"]
    assert jobs["retrain"] == len(tuned_rows) * (cfg["tuning"]["final_seeds"] - 1)


def test_more_final_seeds_schedule_only_the_new_replicates(demo_run):
    workdir, cfg = demo_run
    changed = copy.deepcopy(cfg)
    changed["tuning"]["final_seeds"] = cfg["tuning"]["final_seeds"] + 1
    write_config(workdir, changed)
    try:
        jobs = planned_jobs(workdir)
    finally:
        write_config(workdir, cfg)
    n_tuned_cells = len([k for _, k in grid_rows(cfg) if k != "zeroshot"]) * len(cfg["benchmark"]["datasets"])
    assert jobs == {"retrain": n_tuned_cells, "aggregate": 1, "all": 1}  # no study is rerun


def test_seed_replicates_feed_the_tables(demo_run):
    workdir, cfg = demo_run
    table = pd.read_csv(workdir / "results/tables/dice.csv")
    assert {"newlook_ci_low", "newlook_ci_high", "n_seeds"} <= set(table.columns)
    tuned = table["method"] != "zeroshot"
    assert (table.loc[tuned, "n_seeds"] == cfg["tuning"]["final_seeds"]).all()
    assert (table.loc[~tuned, "n_seeds"] == 1).all()
    assert (table["newlook_ci_low"] <= table["newlook_mean"]).all() and (table["newlook_mean"] <= table["newlook_ci_high"]).all()
    cell = workdir / "results/cells/clipseg/coop/newlook"
    seeds = [pd.read_csv(cell / "seeds" / str(r) / "test_metrics.csv") for r in range(cfg["tuning"]["final_seeds"])]
    coop = table[(table["model"] == "clipseg") & (table["method"] == "coop")].iloc[0]
    assert coop["newlook_mean"] == pytest.approx(np.mean([s["dice"].mean() for s in seeds]))
    pairwise = pd.read_csv(workdir / "results/tables/pairwise.csv")
    assert {"p", "p_holm", "effect_size"} <= set(pairwise.columns) and (pairwise["p_holm"] >= pairwise["p"]).all()
    cost = pd.read_csv(workdir / "results/tables/cost.csv")
    assert len(cost) == len(grid_rows(cfg)) * len(cfg["benchmark"]["datasets"]) and (cost["train_hours"] > 0).all()


def test_report_code_edit_reruns_only_aggregation(demo_run):
    """An edit (new content, not just a newer mtime: Snakemake compares checksums) of report code."""
    workdir, _ = demo_run
    source = REPO / "src/tunevlseg/report/figures.py"
    original, stat = source.read_bytes(), source.stat()
    try:
        source.write_bytes(original + b"\n# edited by test_report_code_edit_reruns_only_aggregation\n")
        assert planned_jobs(workdir) == {"aggregate": 1, "all": 1}
    finally:
        source.write_bytes(original)
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def caption_phrases() -> dict[str, str]:
    """A plain-ASCII opening phrase of every caption file (how the report HTML must show it)."""
    phrases = {}
    for rst in sorted((REPO / "workflow/report").glob("*.rst")):
        words = list(itertools.takewhile(str.isascii, rst.read_text().split()))[:6]
        assert len(words) >= 3, rst  # keep caption openings ASCII: the HTML may escape the rest
        phrases[rst.name] = " ".join(words)
    return phrases


def test_snakemake_report_embeds_every_figure_with_its_caption(demo_run):
    workdir, cfg = demo_run
    out = snakemake(workdir, "--report", "results/report.html", timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    html = (workdir / "results/report.html").read_text()
    missing = [name for name, phrase in caption_phrases().items() if phrase not in html]
    assert not missing, missing
    # docutils renders every caption: no warning (e.g. a duplicate link target) while building or in the page
    warnings = re.findall(r"\((?:WARNING|ERROR|SEVERE)/\d\).*", out.stdout + out.stderr)
    assert warnings == [], warnings[:5]
    assert "system-message" not in html  # a docutils message rendered into a caption
    added = re.findall(r"^Adding (\S+) \(", out.stdout + out.stderr, re.M)
    # the Dice table is an HTML page the report shows inline (a csv would only be downloaded)
    assert "dice.html" in added and "dice.csv" not in added
    bench = cfg["benchmark"]
    n_tuned = len([k for _, k in grid_rows(cfg) if k != "zeroshot"]) * len(bench["datasets"])
    # Dice table (html), unstable cells, heat map, domain bars, depth figure + csv, pairwise, rank stability,
    # CD diagram, cost table, Dice vs parameters, 2 Optuna figures per tuned cell, 1 panel per dataset
    assert len(added) == 11 + 2 * n_tuned + len(bench["datasets"]), added


def test_partial_report_marks_unfinished_cell_and_never_schedules_cells(demo_run, tmp_path):
    """report_partial in a copy of the finished demo where one cell has not finished yet."""
    workdir, cfg = demo_run
    write_config(tmp_path, cfg)
    shutil.copytree(workdir / "results/cells", tmp_path / "results/cells",
                    ignore=shutil.ignore_patterns("best.pt"))
    held_back = tmp_path / "results/cells/clipseg/vpt/ctvolumes"
    shutil.move(held_back, tmp_path / "vpt_ctvolumes")
    assert planned_jobs(tmp_path, "report_partial") == {"report_partial": 1}
    out = snakemake(tmp_path, "report_partial", timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    full = pd.read_csv(workdir / "results/tables/dice.csv", index_col=0)
    partial = pd.read_csv(tmp_path / "results/partial/tables/dice.csv", index_col=0)
    assert partial.loc["clipseg · vpt", ["ctvolumes_mean", "ctvolumes_std"]].isna().all()
    assert partial.loc["clipseg · vpt", "newlook_mean"] == full.loc["clipseg · vpt", "newlook_mean"]
    others = dict(index="clipseg · vpt", columns="mean")
    pd.testing.assert_frame_equal(partial.drop(**others), full.drop(**others))
    md = (tmp_path / "results/partial/tables/dice.md").read_text()
    vpt_row = next(line for line in md.splitlines() if line.startswith("| clipseg · vpt |"))
    header = next(line for line in md.splitlines() if line.startswith("| model · method |"))
    column = header.split(" | ").index("ctvolumes")
    assert vpt_row.split(" | ")[column] == "—" and md.count("—") == 1
    assert planned_jobs(tmp_path, "report_partial") == {}
    shutil.move(tmp_path / "vpt_ctvolumes", held_back)  # the cell finishes: the partial report is stale
    assert planned_jobs(tmp_path, "report_partial") == {"report_partial": 1}


@pytest.mark.parametrize("edit,expected", [
    (lambda c: c["benchmark"]["methods"].append("coopp"), ["coopp", "coop", "vpt"]),
    (lambda c: c["benchmark"]["datasets"].append("kvasirr"), ["kvasirr", "benchmark.datasets", "newlook"]),
    (lambda c: c["methods"]["vpt"]["search"]["lr"].update(high=5.0), ["lr", "high", "5.0"]),
    (lambda c: c["benchmark"]["models"].append("crisp"), ["crisp", "clipseg"]),
    (lambda c: c["benchmark"].update(models=["cris"], methods=["vpt", "maple"]), ["no model supports", "cris"]),
    (lambda c: c["methods"]["vpt"]["search"].update(weight_decy={"type": "float", "low": 0.1, "high": 0.2}),
     ["config.yaml: methods.vpt.search", "weight_decy", "weight_decay"]),
])
def test_bad_config_fails_at_start_naming_the_key(tmp_path, edit, expected):
    cfg = reduced_config()
    edit(cfg)
    write_config(tmp_path, cfg)
    out = snakemake(tmp_path, "-n", timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    for word in expected:
        assert word in text, (word, text[-2000:])
    assert not (tmp_path / "results").exists()


def test_a_yaml_error_in_config_yaml_names_the_file_and_line(tmp_path):
    (tmp_path / "config.yaml").write_text("results: results\nbenchmark:\n  models: [clipseg\n  methods: [coop]\n")
    out = snakemake(tmp_path, "-n", timeout=120)
    assert out.returncode != 0 and "config.yaml: line 4, column 10: not valid YAML" in out.stdout + out.stderr


def test_an_overlay_merges_after_its_base_and_alone_fails_in_one_line(tmp_path):
    write_config(tmp_path, reduced_config())
    (tmp_path / "overlay.yaml").write_text("tuning:\n  n_trials: 3\nreport:\n  dpi: 90\n")
    out = snakemake(tmp_path, "-n", "-p", "--configfile", "config.yaml", "overlay.yaml", timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '\\"n_trials\\": 3' in out.stdout + out.stderr or '"n_trials": 3' in out.stdout + out.stderr
    out = snakemake(tmp_path, "-n", "--configfile", "overlay.yaml", timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and len(text.splitlines()) < 10, text[-3000:]
    assert "overlay.yaml: top level: missing datasets, models, benchmark; if this is an overlay" in text


def test_paths_with_spaces_are_quoted_in_every_job(tmp_path):
    cfg = reduced_config()
    cfg["results"] = "my results"
    cfg["tuning"]["workers_per_cell"] = 2
    write_config(tmp_path, cfg)
    out = snakemake(tmp_path, "-n", "-p", "all", "report_partial", timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line.strip().removeprefix("Shell command:").strip() for line in (out.stdout + out.stderr).splitlines()]
    commands = [line for line in lines if line.startswith("tunevlseg ")]
    rules = {c.split()[1] for c in commands}
    assert {"synth", "prepare", "pretrain", "tune", "retrain", "aggregate", "report"} <= rules, rules
    for command in commands:  # every path under the results folder is one quoted word
        assert " my results/" not in command and "'my results/" in command, command


# Last: it leaves the cell's recorded n_trials different from the config.
def test_more_trials_resume_the_study(demo_run):
    workdir, cfg = demo_run
    cell = workdir / "results/cells/clipseg/coop/newlook"
    before = {p.parent.name: p.stat().st_mtime_ns for p in (cell / "trials").glob("*/epochs.csv")}
    changed = copy.deepcopy(cfg)
    changed["tuning"]["n_trials"] = 3
    write_config(workdir, changed)
    try:
        out = snakemake(workdir, str(cell.relative_to(workdir) / "best.json"))
        assert out.returncode == 0, out.stderr[-4000:]
    finally:
        write_config(workdir, cfg)
    trials = pd.read_csv(cell / "trials.csv")
    assert sorted(trials["trial"]) == [0, 1, 2] and (trials["state"] == "COMPLETE").all()
    after = {p.parent.name: p.stat().st_mtime_ns for p in (cell / "trials").glob("*/epochs.csv")}
    assert {k: after[k] for k in before} == before  # finished trials were not redone


def test_warm_jobs_give_the_same_numbers_as_fresh_processes(demo_run, tmp_path):
    """TUNEVLSEG_WARM=1 (what `make demo` sets): training jobs fork from one server that imported torch."""
    workdir, cfg = demo_run
    small = copy.deepcopy(cfg)
    small["benchmark"].update(models=["clipseg"], methods=["zeroshot", "coop", "vpt"], datasets=["newword"])
    write_config(tmp_path, small)
    runtime = Path(tempfile.mkdtemp(prefix="warm", dir="/tmp"))  # private (0700), and AF_UNIX paths are short
    sockets = runtime / "tunevlseg-warm"
    try:
        out = snakemake(tmp_path, env={"TUNEVLSEG_WARM": "1", "XDG_RUNTIME_DIR": str(runtime),
                                       "TUNEVLSEG_WARM_IDLE": "30"})
        assert out.returncode == 0, out.stderr[-6000:]
        assert "warm start not used" not in out.stderr
        logs = list(sockets.glob("*.sock.log"))
        assert len(logs) == 1, logs
        forked = re.findall(r"^warm: job \d+: (\w+) in ", logs[0].read_text(), re.M)
    finally:
        for sock in sockets.glob("*.sock"):
            sock.unlink()  # stops the server
        shutil.rmtree(runtime, ignore_errors=True)
    # pretrain (and maybe a features job) started the server and ran in-process; the rest were forked
    assert forked.count("tune") == 3 and forked.count("retrain") == 2, forked
    for method in small["benchmark"]["methods"]:
        for replicate in range(1 if method == "zeroshot" else cfg["tuning"]["final_seeds"]):
            name = f"results/cells/clipseg/{method}/newword/seeds/{replicate}/test_metrics.csv"
            warm_run, plain_run = (pd.read_csv(root / name) for root in (tmp_path, workdir))
            pd.testing.assert_frame_equal(warm_run, plain_run)  # same per-image Dice, to the last bit
