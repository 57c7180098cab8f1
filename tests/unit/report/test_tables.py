"""Tests for tunevlseg.report: collecting results, Dice tables, figures."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from tunevlseg.report.collect import load_best, load_trials
from tunevlseg.report.figures import POOLED, depth_correlations, plot_depth_vs_dice, plot_dice_heatmap
from tunevlseg.report.tables import dice_table, write_dice_tables

# (model, method, dataset) -> (test_dice_mean, test_dice_std); None = no completed trial
CELLS = {
    ("clipseg", "zeroshot", "tissue"): (0.40, 0.20),
    ("clipseg", "zeroshot", "polyp"): (0.30, 0.10),
    ("clipseg", "coop", "tissue"): (0.69, 0.21),
    ("clipseg", "coop", "polyp"): (0.80, 0.05),
    ("clipseg", "vpt", "tissue"): (0.7123, 0.1),
    ("cris", "maple", "polyp"): (0.5556, 0.3),
    ("cris", "vpt", "tissue"): None,
}
DATASETS = ["tissue", "polyp"]
TRIAL_COLS = ["model", "method", "dataset", "trial", "state", "depth", "lr", "weight_decay",
              "val_dice", "test_dice_mean", "test_dice_std", "test_iou_mean", "seed",
              "duration_s"]


def _best_doc(cell, metrics):
    model, method, dataset = cell
    doc = {"model": model, "method": method, "dataset": dataset, "trial": None, "params": {},
           "val_dice": None, "test_dice_mean": None, "test_dice_std": None,
           "test_iou_mean": None, "test_iou_std": None, "n_test": None}
    if metrics is not None:
        doc.update(trial=3, params={"depth": 2, "lr": 1e-3, "weight_decay": 1e-4},
                   val_dice=metrics[0] + 0.01, test_dice_mean=metrics[0],
                   test_dice_std=metrics[1], test_iou_mean=metrics[0] - 0.1,
                   test_iou_std=0.2, n_test=60)
    return doc


@pytest.fixture
def best_paths(tmp_path):
    paths = []
    for cell, metrics in CELLS.items():
        path = tmp_path / "results" / "/".join(cell) / "best.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(_best_doc(cell, metrics)))
        paths.append(path)
    return paths


@pytest.fixture
def best(best_paths):
    return load_best(best_paths)


def _trial_rows(model, method, dataset, depth_dice, state="COMPLETE"):
    return [{"model": model, "method": method, "dataset": dataset, "trial": i, "state": state,
             "depth": d, "lr": 1e-3, "weight_decay": 1e-4, "val_dice": v, "test_dice_mean": v,
             "test_dice_std": 0.1, "test_iou_mean": v - 0.1, "seed": 0, "duration_s": 1.5}
            for i, (d, v) in enumerate(depth_dice)]


MONOTONE = [(1, 0.2), (2, 0.3), (3, 0.35), (4, 0.5), (6, 0.7)]
KNOWN = [(1, 0.5), (1, 0.6), (2, 0.4), (3, 0.7), (4, 0.55), (5, 0.8), (6, 0.45)]


@pytest.fixture
def trials_frame(tmp_path):
    groups = [
        _trial_rows("clipseg", "coop", "tissue", MONOTONE),
        _trial_rows("clipseg", "vpt", "tissue", KNOWN),
        _trial_rows("clipseg", "vpt", "tissue", [(2, 0.9)], state="FAIL"),
        _trial_rows("clipseg", "coop", "polyp", [(1, 0.5), (2, 0.6)]),
        _trial_rows("cris", "maple", "polyp", [(3, 0.4), (3, 0.5), (3, 0.6)]),
        _trial_rows("clipseg", "zeroshot", "tissue", [(0, 0.42)]),
    ]
    paths = []
    for i, rows in enumerate(groups):
        frame = pd.DataFrame(rows, columns=TRIAL_COLS)
        if i == 0:
            frame["param_n_ctx"] = 4
        path = tmp_path / f"cell{i}" / "trials.csv"
        path.parent.mkdir()
        frame.to_csv(path, index=False)
        paths.append(path)
    return load_trials([*paths, tmp_path / "missing" / "trials.csv"])


# --------------------------------------------------------------------------- collect


def test_load_best_one_row_per_cell(best):
    assert len(best) == len(CELLS)
    row = best.set_index(["model", "method", "dataset"]).loc[("clipseg", "coop", "tissue")]
    assert row["test_dice_mean"] == pytest.approx(0.69)
    assert row["param_depth"] == 2
    assert best.set_index("method").loc["maple", "test_iou_std"] == pytest.approx(0.2)


def test_load_best_null_metrics_are_nan(best):
    row = best.set_index(["model", "method"]).loc[("cris", "vpt")]
    assert math.isnan(row["test_dice_mean"]) and math.isnan(row["trial"])


@pytest.mark.parametrize("content", ["{not json", "[1, 2]",
                                     json.dumps({"model": "clipseg", "method": "coop"})])
def test_malformed_best_names_file(tmp_path, best_paths, content):
    bad = tmp_path / "bad" / "best.json"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.raises(ValueError, match="bad/best.json"):
        load_best([*best_paths, bad])


def test_missing_best_names_file(tmp_path):
    with pytest.raises(ValueError, match="nowhere/best.json"):
        load_best([tmp_path / "nowhere" / "best.json"])


def test_load_trials_concatenates_existing(trials_frame):
    assert len(trials_frame) == 5 + 7 + 1 + 2 + 3 + 1
    assert "param_n_ctx" in trials_frame.columns
    assert trials_frame["depth"].dtype == float


def test_bad_trials_names_file(tmp_path):
    bad = tmp_path / "broken" / "trials.csv"
    bad.parent.mkdir()
    bad.write_text("model,method,dataset\nclipseg,coop,tissue\n")
    with pytest.raises(ValueError, match="broken/trials.csv"):
        load_trials([bad])


# --------------------------------------------------------------------------- tables


def test_dice_table_values_and_missing(best):
    table = dice_table(best, datasets=DATASETS)
    assert list(table.columns) == [*DATASETS, "mean"]
    assert table.loc["clipseg · coop", "tissue"] == "0.690 ± 0.210"
    assert table.loc["clipseg · vpt", "tissue"] == "0.712 ± 0.100"
    assert table.loc["clipseg · vpt", "polyp"] == "—"
    assert table.loc["cris · vpt", "tissue"] == "—"  # present cell without a completed trial
    assert table.loc["cris · vpt", "mean"] == "—"
    assert "clipseg · zeroshot" in table.index


def test_dice_table_mean_column_over_present_cells(best):
    table = dice_table(best, datasets=DATASETS)
    assert table.loc["clipseg · coop", "mean"] == f"{(0.69 + 0.80) / 2:.3f}"
    assert table.loc["clipseg · vpt", "mean"] == "0.712"  # only one present dataset
    assert table.loc["clipseg · zeroshot", "mean"] == "0.350"


def test_dice_table_orders_and_absent_rows(best):
    rows = ["cris · maple", "clipseg · coop", "cris · nothing"]
    table = dice_table(best, datasets=["polyp", "absent"], rows=rows)
    assert list(table.index) == rows
    assert list(table.columns) == ["polyp", "absent", "mean"]
    assert table.loc["cris · maple", "polyp"] == "0.556 ± 0.300"
    assert (table.loc["cris · nothing"] == "—").all()
    assert (table["absent"] == "—").all()


def test_markdown_bold_marks_column_max(best, tmp_path):
    paths = write_dice_tables(best, tmp_path / "tables" / "dice", datasets=DATASETS)
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex", ".html"]
    lines = paths[1].read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = {(cells := [c.strip() for c in ln.strip("|").split("|")])[0]: dict(zip(header, cells))
            for ln in lines[2:]}
    expected_best = {"tissue": "clipseg · vpt", "polyp": "clipseg · coop",
                     "mean": "clipseg · coop"}
    for column, winner in expected_best.items():
        bold_rows = [r for r, cells in body.items() if cells[column].startswith("**")]
        assert bold_rows == [winner], column
    assert body["clipseg · coop"]["tissue"] == "0.690 ± 0.210"
    assert body["cris · vpt"]["tissue"] == "—"


def test_html_table_matches_the_markdown_one(best, tmp_path):
    """The report shows dice.html inline: the same cells and bold marks as dice.md, a real <table>."""
    import re
    from html import unescape

    csv, md, _, html = write_dice_tables(best, tmp_path / "dice", datasets=DATASETS)
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr>") == 1 + len(best[["model", "method"]]
                                                                                .drop_duplicates())
    md_rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in md.read_text().splitlines()[2:]]
    html_rows = [[unescape(c.replace("<b>", "**").replace("</b>", "**"))
                  for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr)]
                 for tr in re.findall(r"<tr>(.*?)</tr>", page)[1:]]
    assert html_rows == md_rows
    assert ["clipseg · coop", "0.690 ± 0.210"] == html_rows[[r[0] for r in html_rows].index("clipseg · coop")][:2]


def test_latex_booktabs_bold(best, tmp_path):
    tex = write_dice_tables(best, tmp_path / "dice", datasets=DATASETS)[2].read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    vpt_line = next(ln for ln in tex.splitlines() if ln.startswith(r"clipseg $\cdot$ vpt"))
    assert r"\textbf{0.712 $\pm$ 0.100}" in vpt_line
    assert tex.count(r"\textbf{") == 3


def test_latex_escapes_underscores(tmp_path):
    best = pd.DataFrame([{"model": "cris", "method": "shared_attention", "dataset": "kvasir_seg",
                          "test_dice_mean": 0.5, "test_dice_std": 0.1}])
    tex = write_dice_tables(best, tmp_path / "dice")[2].read_text()
    assert r"shared\_attention" in tex and r"kvasir\_seg" in tex
    assert "shared_attention" not in tex


def test_csv_numeric_round_trip(best, tmp_path):
    csv_path = write_dice_tables(best, tmp_path / "dice", datasets=DATASETS)[0]
    back = pd.read_csv(csv_path, index_col="row")
    for (model, method, dataset), metrics in CELLS.items():
        row = f"{model} · {method}"
        if metrics is None:
            assert math.isnan(back.loc[row, f"{dataset}_mean"])
            continue
        assert back.loc[row, f"{dataset}_mean"] == metrics[0]
        assert back.loc[row, f"{dataset}_std"] == metrics[1]
    assert back.loc["clipseg · coop", "mean"] == pytest.approx((0.69 + 0.80) / 2)
    assert math.isnan(back.loc["clipseg · vpt", "polyp_mean"])


def test_cells_with_fewer_seed_replicates_than_expected_are_marked(best, tmp_path):
    seeds = {("clipseg", "coop", "tissue"): 2, ("clipseg", "coop", "polyp"): 3, ("clipseg", "zeroshot", "tissue"): 1}
    counted = best.assign(n_seeds=[seeds.get(tuple(r), 3) for r in best[["model", "method", "dataset"]].values],
                          n_seeds_expected=[1 if m == "zeroshot" else 3 for m in best["method"]])
    table = dice_table(counted, datasets=DATASETS)
    assert table.loc["clipseg · coop", "tissue"] == "0.690 ± 0.210 (2/3 seeds)"
    assert table.loc["clipseg · coop", "polyp"] == "0.800 ± 0.050"  # all three
    assert table.loc["clipseg · zeroshot", "tissue"] == "0.400 ± 0.200"  # one of one
    assert table.loc["cris · vpt", "tissue"] == "—"
    back = pd.read_csv(write_dice_tables(counted, tmp_path / "dice", datasets=DATASETS)[0], index_col="row")
    assert (back.loc["clipseg · coop", "n_seeds"], back.loc["clipseg · coop", "n_seeds_expected"]) == (2, 3)
    assert "(2/3 seeds)" in (tmp_path / "dice.md").read_text()


def test_no_temp_files_left(best, tmp_path):
    out = tmp_path / "out"
    write_dice_tables(best, out / "dice")
    assert sorted(p.name for p in out.iterdir()) == ["dice.csv", "dice.html", "dice.md", "dice.tex"]


# --------------------------------------------------------------------------- correlations


def _corr_row(corr, dataset, model, method):
    sel = corr[(corr.dataset == dataset) & (corr.model == model) & (corr.method == method)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_depth_correlations_monotone_and_known(trials_frame):
    corr = depth_correlations(trials_frame)
    assert list(corr.columns) == ["dataset", "model", "method", "n", "rho", "p", "ci_low", "ci_high"]
    mono = _corr_row(corr, "tissue", "clipseg", "coop")
    assert mono["n"] == 5 and mono["rho"] == pytest.approx(1.0)
    # every resample in which depth varies is still perfectly monotone
    assert mono["ci_low"] == pytest.approx(1.0) and mono["ci_high"] == pytest.approx(1.0)
    known = _corr_row(corr, "tissue", "clipseg", "vpt")
    expected = stats.spearmanr(*zip(*KNOWN))
    assert known["n"] == 7  # the FAIL trial is excluded
    assert known["rho"] == pytest.approx(expected.statistic)
    assert known["p"] == pytest.approx(expected.pvalue)
    assert -1 <= known["ci_low"] < known["rho"] < known["ci_high"] <= 1
    assert not (corr.method == "zeroshot").any()


def test_depth_correlations_na_cases(trials_frame):
    corr = depth_correlations(trials_frame)
    assert math.isnan(_corr_row(corr, "polyp", "clipseg", "coop")["rho"])  # n < 3
    assert math.isnan(_corr_row(corr, "polyp", "cris", "maple")["rho"])  # constant depth
    assert math.isnan(_corr_row(corr, "polyp", "cris", "maple")["ci_low"])
    pooled = _corr_row(corr, POOLED, "cris", "maple")
    assert pooled["n"] == 0 and math.isnan(pooled["rho"])


def test_pooled_depth_correlation_is_the_trial_weighted_mean(trials_frame):
    corr = depth_correlations(trials_frame)
    # vpt has one dataset: pooled = its Spearman rho
    assert _corr_row(corr, POOLED, "clipseg", "vpt")["rho"] == pytest.approx(stats.spearmanr(*zip(*KNOWN)).statistic)
    # coop: monotone on tissue (5 trials) -> 1, and so is every resample; polyp's 2 trials (ρ = ±1 whatever
    # the data) are left out of the pool
    coop = _corr_row(corr, POOLED, "clipseg", "coop")
    assert coop["n"] == 5 and coop["rho"] == pytest.approx(1.0) and coop["ci_low"] == pytest.approx(1.0)
    up, down = MONOTONE, [(d, 1 - v) for d, v in MONOTONE]
    mixed = pd.DataFrame(_trial_rows("m", "coop", "a", up) + _trial_rows("m", "coop", "b", down)
                         + _trial_rows("m", "vpt", "a", up) + _trial_rows("m", "vpt", "b", KNOWN))
    corr = depth_correlations(mixed)
    assert _corr_row(corr, POOLED, "m", "coop")["rho"] == pytest.approx(0.0, abs=1e-12)
    rho_known = stats.spearmanr(*zip(*KNOWN)).statistic
    vpt = _corr_row(corr, POOLED, "m", "vpt")
    assert vpt["n"] == 12 and vpt["rho"] == pytest.approx((5 * 1.0 + 7 * rho_known) / 12)
    assert vpt["ci_low"] < vpt["rho"] < vpt["ci_high"]


def test_depth_correlations_follow_the_config_dataset_order(trials_frame):
    corr = depth_correlations(trials_frame, datasets=["tissue", "polyp"])
    assert list(dict.fromkeys(corr["dataset"])) == ["tissue", "polyp", POOLED]
    assert list(dict.fromkeys(depth_correlations(trials_frame)["dataset"])) == ["polyp", "tissue", POOLED]
    pd.testing.assert_frame_equal(corr.sort_values(["dataset", "model", "method"]).reset_index(drop=True),
                                  depth_correlations(trials_frame).sort_values(["dataset", "model", "method"])
                                  .reset_index(drop=True))


def test_depth_rho_and_interval_need_five_trials():
    corr = depth_correlations(pd.DataFrame(_trial_rows("m", "coop", "a", MONOTONE[:4])))
    row = _corr_row(corr, "a", "m", "coop")
    assert row["n"] == 4 and math.isnan(row["rho"]) and math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert _corr_row(corr, POOLED, "m", "coop")["n"] == 4 and math.isnan(_corr_row(corr, POOLED, "m", "coop")["rho"])
    five = _corr_row(depth_correlations(pd.DataFrame(_trial_rows("m", "coop", "a", MONOTONE))), "a", "m", "coop")
    assert five["n"] == 5 and five["rho"] == pytest.approx(1.0)


def test_the_issue_demo_pooled_rho_from_three_two_trial_datasets_is_not_shown():
    """2 trials on each of 3 datasets gave pooled ρ = ±1.0, p = 0.0 from 6 trials: now n too small."""
    rows = [r for d, pts in (("a", [(1, 0.2), (2, 0.3)]), ("b", [(1, 0.5), (2, 0.4)]), ("c", [(2, 0.1), (1, 0.6)]))
            for r in _trial_rows("m", "coop", d, pts)]
    corr = depth_correlations(pd.DataFrame(rows))
    assert corr["rho"].isna().all() and list(corr["n"]) == [2, 2, 2, 0]
    from tunevlseg.report.figures import _legend_label

    assert _legend_label("m · coop", math.nan, math.nan, n=2) == "m · coop (ρ: n too small (n = 2, needs ≥ 5))"
    from tunevlseg.report.figures import _pooled_note

    assert _pooled_note(corr) == "pooled ρ: n too small (n = 2 trials per dataset, needs ≥ 3)"
    four = pd.DataFrame(_trial_rows("m", "coop", "a", MONOTONE[:4]))
    assert _pooled_note(depth_correlations(four)) == "pooled ρ: n too small (n = 4, needs ≥ 5)"


# --------------------------------------------------------------------------- figures


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_heatmap_png(best, tmp_path):
    out = plot_dice_heatmap(best, tmp_path / "figs" / "heatmap.png", dpi=80)
    width, height = _png_size(out)
    assert 200 < width < 3000 and 150 < height < 3000
    assert [p.name for p in out.parent.iterdir()] == ["heatmap.png"]


def test_depth_figure_png_grows_with_panels(trials_frame, tmp_path):
    two = plot_depth_vs_dice(trials_frame, tmp_path / "depth2.png", dpi=80)
    one = plot_depth_vs_dice(trials_frame[trials_frame.dataset == "tissue"],
                             tmp_path / "depth1.png", dpi=80)
    (w2, _), (w1, h1) = _png_size(two), _png_size(one)
    assert 300 < w1 < w2 < 4000 and 200 < h1 < 4000


def test_empty_inputs_give_png(tmp_path, trials_frame):
    empty = load_trials([])
    assert empty.empty
    _png_size(plot_depth_vs_dice(empty, tmp_path / "empty.png", dpi=60))
    failed = trials_frame.assign(state="FAIL")
    _png_size(plot_depth_vs_dice(failed, tmp_path / "failed.png", dpi=60))
    _png_size(plot_dice_heatmap(load_best([]), tmp_path / "empty_heat.png", dpi=60))
    assert depth_correlations(empty).empty
