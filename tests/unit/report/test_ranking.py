"""Rankings across datasets on synthetic grids: Friedman test, critical-difference diagram, rank stability."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.unit.report.grid_fixtures import per_image_frame
from tunevlseg.cells import Grid
from tunevlseg.report.ranking import (
    MEAN_RANK,
    cd_table,
    complete_block,
    critical_difference_figure,
    friedman_ranks,
    plot_critical_difference,
    rank_stability,
)
from tunevlseg.report.stats import cell_summary, image_means

PNG = b"\x89PNG\r\n\x1a\n"
GRID = Grid(("clipseg",), ("zeroshot", "coop", "vpt", "maple"), ("kvasir", "isic", "busi"))
ROWS = GRID.rows()
#: maple is clearly best, vpt and coop are nearly tied, zero-shot is clearly last
OFFSETS = {"clipseg · maple": 0.15, "clipseg · vpt": 0.051, "clipseg · coop": 0.05}


def one_dataset(rows: dict[str, np.ndarray]) -> pd.DataFrame:
    records = [("m", k, "a", 0, f"i{i}", v) for k, values in rows.items() for i, v in enumerate(values)]
    return pd.DataFrame.from_records(records, columns=["model", "method", "dataset", "replicate", "id", "dice"])


@pytest.fixture(scope="module")
def per_image():
    return per_image_frame(GRID, OFFSETS, n_images=60, n_seeds=2, noise=0.05)


def summary_frame(values: dict[str, list[float]], datasets=("a", "b", "c")) -> pd.DataFrame:
    """A cell_summary-like frame from {row: [Dice per dataset]}."""
    records = [(*row.split(" · "), d, v) for row, vals in values.items() for d, v in zip(datasets, vals, strict=True)]
    return pd.DataFrame.from_records(records, columns=["model", "method", "dataset", "dice_mean"])


def test_friedman_on_a_perfectly_ordered_grid():
    # 4 rows in the same order on 3 datasets: rank sums 3, 6, 9, 12
    # chi2 = 12 / (N k (k+1)) * sum R^2 - 3 N (k+1) = 12 / 60 * 270 - 45 = 9
    block = complete_block(summary_frame({"m · a": [0.9, 0.8, 0.7], "m · b": [0.8, 0.7, 0.6],
                                          "m · c": [0.7, 0.6, 0.5], "m · d": [0.6, 0.5, 0.4]}))
    result = friedman_ranks(block)
    assert result.ok and result.n_datasets == 3
    assert result.statistic == pytest.approx(9.0)
    assert result.p == pytest.approx(stats.chi2.sf(9.0, 3))
    assert result.mean_ranks.to_dict() == {"m · a": 1.0, "m · b": 2.0, "m · c": 3.0, "m · d": 4.0}
    # Nemenyi: the extreme pair differs most, the p-values are symmetric
    p = result.nemenyi
    assert p.loc["m · a", "m · d"] < p.loc["m · a", "m · b"] and np.allclose(p, p.T)
    table = cd_table(result)
    assert list(table["row"]) == ["m · a", "m · b", "m · c", "m · d"]
    assert table["friedman_chi2"].eq(9.0).all() and table.loc[0, "nemenyi_p:m · d"] == p.loc["m · a", "m · d"]


def test_complete_block_drops_rows_missing_a_dataset():
    values = summary_frame({"m · a": [0.9, 0.8, 0.7], "m · b": [0.8, 0.7, 0.6]})
    values = pd.concat([values, summary_frame({"m · c": [0.5, 0.5]}, datasets=("a", "b"))])
    block = complete_block(values, rows=["m · c", "m · b", "m · a"])
    assert list(block.columns) == ["m · b", "m · a"] and list(block.index) == ["a", "b", "c"]
    result = friedman_ranks(block)
    assert not result.ok and math.isnan(result.p)  # 2 complete rows: no test


def test_cd_diagram_on_a_synthetic_grid(per_image, tmp_path):
    result = friedman_ranks(complete_block(cell_summary(per_image), ROWS))
    assert result.mean_ranks["clipseg · maple"] == 1.0 and result.mean_ranks["clipseg · zeroshot"] == 4.0
    fig = critical_difference_figure(result)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "clipseg · maple (1.00)" in labels and "clipseg · zeroshot (4.00)" in labels
    assert f"{result.statistic:.2f}" in fig.axes[0].get_title()
    out = plot_critical_difference(result, tmp_path / "cd.png", dpi=60)
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize("values", [
    {"m · a": [0.9, 0.8, 0.7], "m · b": [0.8, 0.7, 0.6]},  # < 3 rows
    {"m · a": [0.9], "m · b": [0.8], "m · c": [0.7]},  # < 3 datasets
    {"m · a": [0.9, 0.8], "m · b": [0.8, 0.7], "m · c": [0.7, 0.6]},  # 2 datasets: too few since issue 27
])
def test_cd_placeholder(values, tmp_path):
    datasets = ("a", "b", "c")[:len(next(iter(values.values())))]
    result = friedman_ranks(complete_block(summary_frame(values, datasets)))
    assert critical_difference_figure(result) is None
    assert plot_critical_difference(result, tmp_path / "cd.png", dpi=60).read_bytes()[:8] == PNG


def test_tied_mean_ranks_are_drawn_apart_and_labelled_with_the_true_rank():
    """3 datasets where b and c swap places and tie once: both have mean rank 2.5 (the issue's hidden dot)."""
    from tunevlseg.report.ranking import TIE_OFFSET, spread_ties

    block = complete_block(summary_frame({"m · a": [0.9, 0.9, 0.9], "m · b": [0.8, 0.6, 0.7],
                                          "m · c": [0.7, 0.7, 0.7], "m · d": [0.1, 0.1, 0.1]}))
    result = friedman_ranks(block)
    assert result.mean_ranks["m · b"] == result.mean_ranks["m · c"] == 2.5
    drawn = spread_ties(result.mean_ranks)
    assert drawn["m · c"] - drawn["m · b"] == pytest.approx(TIE_OFFSET)
    assert drawn["m · b"] + drawn["m · c"] == pytest.approx(5.0) and drawn["m · a"] == 1.0
    fig = critical_difference_figure(result)
    xs = sorted(float(c.get_offsets()[0][0]) for c in fig.axes[0].collections if len(c.get_offsets()) == 1)
    assert len(xs) == 4 and min(np.diff(xs)) >= TIE_OFFSET - 1e-9  # no marker hides another
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "m · b (2.50)" in labels and "m · c (2.50)" in labels


def test_rank_stability_on_a_synthetic_grid(per_image):
    table = rank_stability(image_means(per_image), ROWS, n_resamples=1000)
    assert set(table["dataset"]) == {*GRID.datasets, MEAN_RANK}
    assert (table["n_resamples"] == 1000).all()
    by = table.set_index(["dataset", "row"])
    for dataset in [*GRID.datasets, MEAN_RANK]:
        assert by.loc[(dataset, "clipseg · maple"), "rank"] == 1
        assert by.loc[(dataset, "clipseg · maple"), "keep_share"] >= 0.95
        assert by.loc[(dataset, "clipseg · zeroshot"), "keep_share"] >= 0.95
    for dataset in GRID.datasets:
        assert by.loc[(dataset, "clipseg · maple"), "score"] == pytest.approx(
            per_image[(per_image.method == "maple") & (per_image.dataset == dataset)]["dice"].mean())
    assert by.loc[(MEAN_RANK, "clipseg · maple"), "score"] == 1.0
    again = rank_stability(image_means(per_image), ROWS, n_resamples=1000)
    pd.testing.assert_frame_equal(table, again)  # seeded


def test_rank_stability_ties_share_the_better_rank():
    values = np.linspace(0.2, 0.8, 40)
    frame = one_dataset({"x": values + 0.1, "y": values + 0.1, "z": values})
    table = rank_stability(image_means(frame), n_resamples=200)
    assert (table["keep_share"] == 1.0).all()  # on the dataset and in the mean rank
    table = table[table["dataset"] == "a"].set_index("row")
    assert table.loc[["m · x", "m · y", "m · z"], "rank"].tolist() == [1, 1, 3]


def test_rank_stability_of_a_near_tie_is_a_coin_flip():
    values = np.linspace(0.2, 0.8, 60)
    swing = np.where(np.arange(60) % 2 == 0, 0.01, -0.01)
    swing[0] += 0.001  # x is ahead by 0.001 / 60 on the full test set
    table = rank_stability(image_means(one_dataset({"x": values + swing, "y": values})), n_resamples=1000)
    table = table[table["dataset"] == "a"].set_index("row")
    assert table.loc["m · x", "rank"] == 1 and table.loc["m · y", "rank"] == 2
    assert 0.4 < table.loc["m · x", "keep_share"] < 0.65
    # x keeps rank 1 when ahead or tied (ties share the better rank), y keeps rank 2 only when behind
    assert 0 <= table.loc["m · x", "keep_share"] - table.loc["m · y", "keep_share"] < 0.05
