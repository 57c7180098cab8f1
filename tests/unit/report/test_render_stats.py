"""render_report with per-image results and the cost frame: every new output at its layout path."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from tests.unit.report.grid_fixtures import cost_frame, per_image_frame, write_cells
from tunevlseg.cells import Grid
from tunevlseg.report.layout import figure_files, table_files
from tunevlseg.report.render import render_report

PNG = b"\x89PNG\r\n\x1a\n"
GRID = Grid(("clipseg",), ("zeroshot", "coop", "vpt"), ("kvasir", "isic"))
NEW_FIGURES = ("critical_difference", "cd_table", "dice_vs_params", "params_table")
NEW_TABLES = ("pairwise", "rank_stability", "unstable", "cost")


@pytest.fixture(scope="module")
def per_image():
    return per_image_frame(GRID, {"clipseg · vpt": 0.2, "clipseg · coop": 0.1}, n_images=30, n_seeds=2)


def test_render_writes_the_statistics_at_their_layout_paths(per_image, tmp_path):
    cells = write_cells(tmp_path / "results", GRID, per_image, n_trials=6)
    tables, figures = tmp_path / "out/tables/dice", tmp_path / "out/figures"
    written = render_report(GRID, cells, tables, figures, dpi=40, per_image=per_image, cost=cost_frame(GRID))
    figs, tabs = figure_files(figures, GRID), table_files(tables)
    expected = [figs[k] for k in NEW_FIGURES] + [tabs[k] for k in NEW_TABLES] + tabs["dice"]
    assert {str(p) for p in written} >= set(expected)
    for key in ("critical_difference", "dice_vs_params"):
        assert open(figs[key], "rb").read(8) == PNG
    pairwise = pd.read_csv(tabs["pairwise"])
    assert len(pairwise) == 2 * 3 and (pairwise["n"] == 30).all()
    assert set(pd.read_csv(tabs["cost"])["method"]) == {"zeroshot", "coop", "vpt"}
    dice = pd.read_csv(tabs["dice"][0], index_col="row")
    assert dice.loc["clipseg · coop", "n_seeds"] == 2 and dice.loc["clipseg · zeroshot", "n_seeds"] == 1
    seed_mean = per_image.query("method == 'coop' and dataset == 'isic'")["dice"].mean()
    assert dice.loc["clipseg · coop", "isic_mean"] == pytest.approx(seed_mean)  # not best.json's replicate 0
    md = open(tabs["dice"][1]).read()
    assert "[" in md and "±" not in md
    # the same grid without per-image results and cost: the old outputs only
    old = tmp_path / "old"
    render_report(GRID, cells, old / "tables/dice", old / "figures", dpi=40)
    figs, tabs = figure_files(old / "figures", GRID), table_files(old / "tables/dice")
    assert not any(os.path.exists(figs[k]) for k in NEW_FIGURES)
    assert not any(os.path.exists(tabs[k]) for k in NEW_TABLES)
    assert "±" in open(tabs["dice"][1]).read()


def test_per_image_cells_outside_the_grid_are_an_error(per_image, tmp_path):
    cells = write_cells(tmp_path / "results", GRID, per_image, n_trials=3)
    foreign = per_image.assign(dataset=per_image["dataset"].replace("isic", "busi"))
    with pytest.raises(ValueError, match="per-image results of cell.*busi"):
        render_report(GRID, cells, tmp_path / "t/dice", tmp_path / "f", dpi=40, per_image=foreign)
    assert not (tmp_path / "t").exists()


def test_bad_cost_frame_writes_nothing(per_image, tmp_path):
    cells = write_cells(tmp_path / "results", GRID, per_image, n_trials=3)
    with pytest.raises(ValueError, match="cost of cell.*cris"):
        render_report(GRID, cells, tmp_path / "t/dice", tmp_path / "f", dpi=40, per_image=per_image,
                      cost=cost_frame(GRID).assign(model="cris"))
    with pytest.raises(ValueError, match="lacks column.*n_trials"):
        render_report(GRID, cells, tmp_path / "t/dice", tmp_path / "f", dpi=40,
                      cost=cost_frame(GRID).drop(columns="n_trials"))
    assert not (tmp_path / "t").exists() and not (tmp_path / "f").exists()


def test_a_collapsed_seed_is_marked_listed_and_logged(per_image, tmp_path, caplog):
    """One seed of clipseg · coop on isic zeroed (the collapse seen on a new machine): the cell carries a
    dagger in the Dice table, its interval spans both seeds, unstable.csv lists it, the log names it."""
    collapsed = per_image.copy()
    hit = (collapsed["method"] == "coop") & (collapsed["dataset"] == "isic") & (collapsed["replicate"] == 1)
    collapsed.loc[hit, ["dice", "iou"]] = 0.0
    cells = write_cells(tmp_path / "results", GRID, collapsed, n_trials=3)
    tables = tmp_path / "out/tables/dice"
    with caplog.at_level("WARNING"):
        render_report(GRID, cells, tables, tmp_path / "out/figures", dpi=40, per_image=collapsed)
    tabs = table_files(tables)
    unstable = pd.read_csv(tabs["unstable"])
    assert [tuple(r) for r in unstable[["method", "dataset"]].itertuples(index=False)] == [("coop", "isic")]
    seeds = collapsed.loc[(collapsed["method"] == "coop") & (collapsed["dataset"] == "isic")]
    good = seeds.loc[seeds["replicate"] == 0, "dice"].mean()
    assert unstable.loc[0, "rep_means"] == f"{good:.3f};0.000"
    md = open(tabs["dice"][1]).read()
    coop = next(line for line in md.splitlines() if line.startswith("| clipseg · coop"))
    assert coop.split("|")[3].strip().rstrip("*").endswith("†") and coop.split("|")[2].count("†") == 0
    assert "† unstable" in md and r"$^\dagger$" in open(tabs["dice"][2]).read()
    dice = pd.read_csv(tabs["dice"][0], index_col="row")
    assert dice.loc["clipseg · coop", "isic_ci_low"] < 0.05 < good - 0.2 < dice.loc["clipseg · coop", "isic_ci_high"]
    assert bool(dice.loc["clipseg · coop", "isic_unstable"]) and not bool(dice.loc["clipseg · coop", "kvasir_unstable"])
    assert dice.loc["clipseg · coop", "isic_rep_min"] == 0.0
    assert any("unstable cell clipseg/coop/isic" in r.getMessage() and f"{good:.3f}, 0.000" in r.getMessage()
               for r in caplog.records)
