"""Per-image statistics on constructed data with known answers: cell means and bootstrap CIs,
Wilcoxon + Holm, the rank-biserial effect size, and the Dice table's "not significantly worse" marks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tunevlseg.report.stats import (
    N_BOOT,
    PAIRWISE_COLUMNS,
    SEED,
    cell_summary,
    check_per_image,
    holm,
    image_means,
    pairwise_tests,
    rank_biserial,
    summary_as_best,
    unstable_cells,
    versus_best,
    wilcoxon_pair,
)
from tunevlseg.report.tables import write_dice_tables

RNG = np.random.default_rng(7)
BASE = RNG.uniform(0.3, 0.7, 50)  # one dataset's per-image Dice of a reference method


def frame(rows: dict[tuple[str, str], list[np.ndarray]], dataset: str = "polyp") -> pd.DataFrame:
    """Per-image frame from {(model, method): [dice of replicate 0, dice of replicate 1, ...]}."""
    records = [(m, k, dataset, rep, f"img{i:03d}", float(d))
               for (m, k), reps in rows.items() for rep, values in enumerate(reps) for i, d in enumerate(values)]
    return pd.DataFrame.from_records(records, columns=["model", "method", "dataset", "replicate", "id", "dice"])


def pair_row(table: pd.DataFrame, a: str, b: str) -> pd.Series:
    sel = table[(table.row_a == a) & (table.row_b == b)]
    assert len(sel) == 1, (a, b)
    return sel.iloc[0]


# ----------------------------------------------------------------------------- cell numbers


def test_cell_mean_averages_replicates_and_ci_shifts_with_the_data():
    per_image = frame({("clipseg", "zeroshot"): [BASE],
                       ("clipseg", "coop"): [BASE + 0.1, BASE + 0.1],  # identical replicates
                       ("clipseg", "cocoop"): [BASE, BASE + 0.2],  # replicate average = BASE + 0.1
                       ("clipseg", "vpt"): [BASE + 0.1]})
    s = cell_summary(per_image).set_index("method")
    assert s.loc["coop", "n_seeds"] == 2 and s.loc["zeroshot", "n_seeds"] == 1
    assert (s["n_images"] == 50).all()
    assert s.loc["cocoop", "dice_mean"] == pytest.approx(BASE.mean() + 0.1)
    assert s.loc["zeroshot", "dice_std"] == pytest.approx(BASE.std())
    # identical replicates add no seed variance: coop's interval is vpt's (same values), and both are
    # zero-shot's shifted by 0.1 (same seed, same image resamples)
    for col in ("ci_low", "ci_high"):
        assert s.loc["coop", col] == pytest.approx(s.loc["vpt", col])
        assert s.loc["coop", col] == pytest.approx(s.loc["zeroshot", col] + 0.1)
    # replicates 0.2 apart: the seeds widen the interval around the same mean
    assert s.loc["cocoop", "ci_low"] < s.loc["vpt", "ci_low"] - 0.05
    assert s.loc["cocoop", "ci_high"] > s.loc["vpt", "ci_high"] + 0.05
    assert s.loc["zeroshot", "ci_low"] < BASE.mean() < s.loc["zeroshot", "ci_high"]
    width = s.loc["zeroshot", "ci_high"] - s.loc["zeroshot", "ci_low"]
    assert 2 * 1.96 * BASE.std() / math.sqrt(50) == pytest.approx(width, rel=0.25)  # ≈ normal-theory width


def test_one_replicate_interval_is_scipys_percentile_bootstrap():
    from scipy import stats

    ref = stats.bootstrap((BASE,), np.mean, n_resamples=N_BOOT, confidence_level=0.95, method="percentile",
                          vectorized=True, rng=np.random.default_rng(SEED)).confidence_interval
    for reps in ([BASE], [BASE, BASE, BASE]):
        s = cell_summary(frame({("clipseg", "coop"): reps})).iloc[0]
        assert (s["ci_low"], s["ci_high"]) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_collapsed_replicate_gives_an_interval_that_spans_both_seeds():
    """Replicates at 0.8 and 0.0 (the collapse seen on a new machine): the interval reaches both, and
    the replicate spread is in the summary; before, an image bootstrap printed 0.400 [0.38, 0.42]."""
    good = np.clip(0.8 + RNG.normal(0, 0.05, 60), 0, 1)
    s = cell_summary(frame({("clipseg", "coop"): [good, np.zeros(60)]})).iloc[0]
    assert s["dice_mean"] == pytest.approx(good.mean() / 2)
    assert s["ci_low"] < 0.05 and s["ci_high"] > 0.75
    assert s["rep_means"] == f"{good.mean():.3f};0.000"
    assert s["rep_min"] == 0.0 and s["rep_max"] == pytest.approx(good.mean())
    assert s["rep_sd"] == pytest.approx(good.mean() / math.sqrt(2))


def test_unstable_cells_names_spread_and_replicates_below_zero_shot():
    good = np.clip(0.8 + RNG.normal(0, 0.05, 40), 0, 1)
    per_image = frame({("clipseg", "zeroshot"): [np.full(40, 0.3)],
                       ("clipseg", "coop"): [good, np.zeros(40)],  # collapsed seed
                       ("clipseg", "vpt"): [good, good - 0.05],  # spread 0.05: stable
                       ("clipseg", "maple"): [np.full(40, 0.31), np.full(40, 0.29)]})  # one seed below zero-shot
    summary = cell_summary(per_image)
    table = unstable_cells(summary).set_index("method")
    assert list(table.index) == ["coop", "maple"]
    assert table.loc["coop", "spread"] == pytest.approx(good.mean())
    assert table.loc["coop", "reason"].startswith(f"replicates differ by {good.mean():.3f} > 0.1")
    assert "replicate 1 no better than zero-shot (0.300)" in table.loc["coop", "reason"]
    assert table.loc["maple", "reason"] == "replicate 1 no better than zero-shot (0.300)"
    assert table.loc["maple", "zeroshot"] == pytest.approx(0.3)
    assert list(unstable_cells(summary, spread=0.9).set_index("method").index) == ["coop", "maple"]
    assert unstable_cells(cell_summary(frame({("clipseg", "vpt"): [good, good - 0.05]}))).empty


def test_one_collapsed_seed_does_not_make_a_row_significantly_worse():
    """Best row 0.8 in both seeds; the other 0.8 in one seed and 0.0 in the other: the seeds do not show
    it is worse (it ties the best in one of them), so it stays bold; on replicate averages it would not."""
    good = np.clip(0.8 + RNG.normal(0, 0.05, 40), 0, 1)
    per_image = frame({("clipseg", "coop"): [good, good], ("clipseg", "vpt"): [good, np.zeros(40)]})
    rows = ["clipseg · coop", "clipseg · vpt"]
    seeds = versus_best(per_image, rows).set_index("row")
    averaged = versus_best(image_means(per_image), rows).set_index("row")
    assert averaged.loc["clipseg · vpt", "p_holm"] < 1e-6 and not averaged.loc["clipseg · vpt", "not_worse"]
    assert seeds.loc["clipseg · vpt", "p"] == 1.0 and seeds.loc["clipseg · vpt", "not_worse"]
    pair = pair_row(pairwise_tests(per_image, rows), "clipseg · vpt", "clipseg · coop")
    assert pair["p"] == 1.0 and pair["effect_size"] == pytest.approx(-1.0)


def test_identical_replicates_give_todays_tests():
    per_image = marked_rows_frame()
    doubled = pd.concat([per_image, per_image.assign(replicate=per_image["replicate"] + 10)])
    rows = ["clipseg · zeroshot", "clipseg · coop", "clipseg · vpt", "clipseg · maple"]
    for fn in (pairwise_tests, versus_best):
        a, b = fn(image_means(per_image), rows), fn(doubled, rows)
        pd.testing.assert_frame_equal(a, b, rtol=1e-12)
    wide = image_means(per_image).pivot(index="id", columns="row", values="dice")
    for _, r in pairwise_tests(doubled, rows).iterrows():  # the two-sided p is SciPy's two-sided Wilcoxon
        assert r["p"] == pytest.approx(wilcoxon_pair((wide[r["row_a"]] - wide[r["row_b"]]).to_numpy()), abs=1e-12)


def test_cell_summary_degenerate_cases():
    s = cell_summary(frame({("clipseg", "coop"): [np.full(50, 0.8)]})).iloc[0]
    assert s["ci_low"] == s["ci_high"] == pytest.approx(0.8)  # every image the same
    one = cell_summary(frame({("clipseg", "coop"): [np.array([0.4])]})).iloc[0]
    assert one["dice_mean"] == 0.4 and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])


def test_identical_methods_are_not_different():
    per_image = frame({("clipseg", "zeroshot"): [BASE - 0.2], ("clipseg", "coop"): [BASE, BASE],
                       ("clipseg", "vpt"): [BASE]})
    tests = pairwise_tests(image_means(per_image))
    same = pair_row(tests, "clipseg · vpt", "clipseg · coop")
    assert same["p"] == 1.0 and same["p_holm"] == pytest.approx(1.0)
    assert same["median_diff"] == 0.0 and same["effect_size"] == 0.0
    s = cell_summary(per_image).set_index("method")
    assert s.loc["vpt", "ci_low"] <= s.loc["coop", "ci_high"] and s.loc["coop", "ci_low"] <= s.loc["vpt", "ci_high"]


# ----------------------------------------------------------------------------- paired tests


def test_constant_shift_is_highly_significant():
    per_image = frame({("clipseg", "zeroshot"): [BASE], ("clipseg", "coop"): [BASE + 0.1]})
    tests = pairwise_tests(image_means(per_image))
    assert list(tests.columns) == list(PAIRWISE_COLUMNS)
    row = pair_row(tests, "clipseg · coop", "clipseg · zeroshot")  # the method against zero-shot
    assert row["n"] == 50 and row["median_diff"] == pytest.approx(0.1)
    assert row["p"] < 0.001 and row["p_holm"] < 0.001
    assert row["effect_size"] == pytest.approx(1.0)


def test_holm_against_a_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (monotone)
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.2, np.nan, 0.01])  # NaN is not counted in the family
    np.testing.assert_allclose(adjusted[[0, 2]], [0.2, 0.02])
    assert math.isnan(adjusted[1])
    assert np.allclose(holm([0.5, 0.6, 0.9]), [1.0, 1.0, 1.0])  # capped at 1


def test_pairwise_holm_is_within_each_dataset_and_monotone():
    rng = np.random.default_rng(3)
    parts = []
    for dataset in ("a", "b"):
        rows = {("clipseg", m): [np.clip(BASE + off + rng.normal(0, 0.05, 50), 0, 1)]
                for m, off in (("zeroshot", 0.0), ("coop", 0.01), ("vpt", 0.03), ("maple", 0.1))}
        parts.append(frame(rows, dataset))
    tests = pairwise_tests(image_means(pd.concat(parts)))
    for _, block in tests.groupby("dataset"):
        assert len(block) == 6  # 4 rows: every pair once
        p, q = block["p"].to_numpy(), block["p_holm"].to_numpy()
        m = len(p)
        order = np.argsort(p)
        expected = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * p[order]))
        np.testing.assert_allclose(q[order], expected)
        assert (np.diff(q[order]) >= 0).all() and (q >= p).all()


def test_rank_biserial_known_values():
    assert rank_biserial(np.full(20, 0.3)) == pytest.approx(1.0)
    assert rank_biserial(np.linspace(0.01, 0.2, 20)) == pytest.approx(1.0)
    assert rank_biserial(-np.linspace(0.01, 0.2, 20)) == pytest.approx(-1.0)
    assert rank_biserial(np.zeros(10)) == pytest.approx(0.0)
    # |d| ranks: zeros 1.5, 1.5; 0.05 -> 3; 0.1 -> 4; 0.2 -> 5.  T+ = 4 + 5 + 1.5, T- = 3 + 1.5, total 15
    assert rank_biserial(np.array([0.1, 0.2, 0.0, 0.0, -0.05])) == pytest.approx((10.5 - 4.5) / 15)


# ----------------------------------------------------------------------------- table marks


def marked_rows_frame():
    """Best row; a copy of it; one lower on only 2 images (lower mean, not significantly worse);
    one clearly worse."""
    slightly = BASE + 0.1
    slightly[[5, 17]] -= 0.05
    return frame({("clipseg", "zeroshot"): [BASE - 0.05],
                  ("clipseg", "coop"): [BASE + 0.1, BASE + 0.1],
                  ("clipseg", "vpt"): [BASE + 0.1],
                  ("clipseg", "maple"): [slightly]})


def test_versus_best_marks_the_rows_not_significantly_worse():
    result = versus_best(image_means(marked_rows_frame()),
                         rows=["clipseg · zeroshot", "clipseg · coop", "clipseg · vpt", "clipseg · maple"])
    marks = result.set_index("row")
    assert (marks["best_row"] == "clipseg · coop").all()  # tie with vpt: the first in row order
    assert marks["not_worse"].to_dict() == {"clipseg · coop": True, "clipseg · zeroshot": False,
                                            "clipseg · vpt": True, "clipseg · maple": True}
    assert marks.loc["clipseg · zeroshot", "p_holm"] < 0.001
    assert 0.05 < marks.loc["clipseg · maple", "p_holm"] < 1 and marks.loc["clipseg · vpt", "p"] == 1.0


def test_dice_table_bolds_exactly_the_rows_not_significantly_worse(tmp_path):
    per_image = marked_rows_frame()
    rows = ["clipseg · zeroshot", "clipseg · coop", "clipseg · vpt", "clipseg · maple"]
    shown = summary_as_best(cell_summary(per_image))
    csv, md, tex, _ = write_dice_tables(shown, tmp_path / "dice", datasets=["polyp"], rows=rows,
                                        not_worse=versus_best(image_means(per_image), rows))
    lines = md.read_text().splitlines()
    cells = {ln.split("|")[1].strip(): ln.split("|")[2].strip() for ln in lines[2:]}
    bold = {r for r, c in cells.items() if c.startswith("**")}
    assert bold == {"clipseg · coop", "clipseg · vpt", "clipseg · maple"}
    s = shown.set_index("method")
    assert cells["clipseg · zeroshot"] == (f"{s.loc['zeroshot', 'test_dice_mean']:.3f} "
                                           f"[{s.loc['zeroshot', 'ci_low']:.3f}, {s.loc['zeroshot', 'ci_high']:.3f}]")
    assert tex.read_text().count(r"\textbf{") == 3 + 2  # 3 in the dataset column; mean: coop, vpt tie
    back = pd.read_csv(csv, index_col="row")
    assert {"polyp_mean", "polyp_std", "polyp_ci_low", "polyp_ci_high", "polyp_p_vs_best", "mean",
            "n_seeds"} <= set(back.columns)
    assert back.loc["clipseg · coop", "n_seeds"] == 2 and back.loc["clipseg · zeroshot", "n_seeds"] == 1
    assert back.loc["clipseg · coop", "polyp_ci_low"] == pytest.approx(s.loc["coop", "ci_low"])
    assert back.loc["clipseg · zeroshot", "polyp_p_vs_best"] < 0.001


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="dice"), "lack column"),
    (lambda f: f.assign(dice=f["dice"].where(f.index != 3, 1.5)), "not in \\[0, 1\\]"),
    (lambda f: f.assign(dice=f["dice"].where(f.index != 3, np.nan)), "not in \\[0, 1\\]"),
    (lambda f: pd.concat([f, f.iloc[[0]]]), "appears twice"),
    (lambda f: f.drop(index=f.index[(f.replicate == 1)][:1]), "different test images"),
])
def test_bad_per_image_input_is_named(change, message):
    good = frame({("clipseg", "coop"): [BASE, BASE]})
    check_per_image(good)
    with pytest.raises(ValueError, match=message):
        check_per_image(change(good))


# ----------------------------------------------------------------------------- captions


def test_captions_state_the_settings_in_force():
    from pathlib import Path

    from tunevlseg.report import figures, ranking, stats

    captions = Path(__file__).resolve().parents[3] / "workflow" / "report"
    text = {name: (captions / f"{name}.rst").read_text() for name in
            ("dice_table", "pairwise", "rank_stability", "depth_vs_dice", "depth_correlations")}
    assert f"{stats.N_BOOT} resamples, seed {stats.SEED}" in text["dice_table"]
    assert f"≥ {stats.ALPHA}" in text["dice_table"] and stats.ZERO_METHOD in text["pairwise"]
    assert f"{ranking.N_RANK_BOOT} times (seed {stats.SEED}" in text["rank_stability"]
    for name in ("depth_vs_dice", "depth_correlations"):
        assert f"{figures.N_CORR_BOOT} resamples" in text[name]
        assert f"{figures.MIN_CI_TRIALS} trials" in text[name]
        flat = " ".join(text[name].split())
        assert f"fewer than {stats.MIN_RHO_TRIALS} trials" in flat and f"at least {stats.MIN_POOLED_STRATUM} trials" in flat
    more = {name: " ".join((captions / f"{name}.rst").read_text().split())
            for name in ("optuna_importances", "critical_difference")}
    assert f"at least {stats.MIN_IMPORTANCE_TRIALS} completed trials" in more["optuna_importances"]
    assert (f"fewer than {stats.MIN_CD_ROWS} such rows or {stats.MIN_CD_DATASETS} datasets"
            in more["critical_difference"])
    assert f"{ranking.TIE_OFFSET:g} apart" in more["critical_difference"]
    assert stats.BOOT_METHOD == "percentile" and "percentile bootstrap" in text["dice_table"]
