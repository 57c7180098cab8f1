"""Cost table, Pareto front and the Dice-vs-parameters points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tunevlseg.report.cost import ALL_DATASETS, COST_COLUMNS, cost_table, dice_vs_params, pareto_front, plot_dice_vs_params

PNG = b"\x89PNG\r\n\x1a\n"
# (model, method, dataset): (n_trainable, test Dice)
CELLS = {
    ("clipseg", "zeroshot", "a"): (0, 0.40), ("clipseg", "coop", "a"): (2_048, 0.60),
    ("clipseg", "vpt", "a"): (30_000, 0.55), ("clipseg", "finetune", "a"): (150_000_000, 0.70),
    ("clipseg", "zeroshot", "b"): (0, 0.30), ("clipseg", "coop", "b"): (4_096, 0.50),
    ("clipseg", "vpt", "b"): (10_000, 0.65), ("clipseg", "finetune", "b"): (150_000_000, 0.60),
}


def cost() -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "method": k, "dataset": d, "n_trainable": n, "train_hours": 1.5,
                          "gpu_hours": 0.0, "peak_mem_mb": 900.0, "n_trials": 0 if k == "zeroshot" else 20}
                         for (m, k, d), (n, _) in CELLS.items()])


def dice() -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "method": k, "dataset": d, "test_dice_mean": v}
                         for (m, k, d), (_, v) in CELLS.items()])


def test_pareto_front_known_points():
    params = np.array([1, 2, 3, 4, 4, 5])
    dice_ = np.array([0.5, 0.6, 0.55, 0.7, 0.7, 0.69])
    # (3, .55) is dominated by (2, .6); (5, .69) by (4, .7); the two equal points dominate neither
    assert pareto_front(params, dice_).tolist() == [True, True, False, True, True, False]


def test_cost_table_order_and_errors():
    rows = ["clipseg · zeroshot", "clipseg · finetune", "clipseg · coop", "clipseg · vpt"]
    table = cost_table(cost().iloc[::-1], rows=rows, datasets=["b", "a"])
    assert list(table.columns) == list(COST_COLUMNS)
    assert list(zip(table["method"], table["dataset"]))[:3] == [("zeroshot", "b"), ("zeroshot", "a"),
                                                                ("finetune", "b")]
    with pytest.raises(ValueError, match="peak_mem_mb"):
        cost_table(cost().drop(columns="peak_mem_mb"))
    with pytest.raises(ValueError, match="train_hours.*not numeric"):
        cost_table(cost().assign(train_hours="slow"))
    with pytest.raises(ValueError, match="clipseg/coop/a appears twice"):
        cost_table(pd.concat([cost(), cost().iloc[[1]]]))


def test_dice_vs_params_points_and_fronts(tmp_path):
    points = dice_vs_params(cost(), dice())
    front = {(p, r) for p, r in points.loc[points["pareto"], ["panel", "row"]].itertuples(index=False)}
    # zero-shot (0 parameters) is not on the log axis and not in the front
    assert front == {("a", "clipseg · coop"), ("a", "clipseg · finetune"),
                     ("b", "clipseg · coop"), ("b", "clipseg · vpt"),
                     (ALL_DATASETS, "clipseg · coop"), (ALL_DATASETS, "clipseg · vpt"),
                     (ALL_DATASETS, "clipseg · finetune")}
    overall = points[points["panel"] == ALL_DATASETS].set_index("row")
    assert overall.loc["clipseg · coop", "n_trainable"] == pytest.approx(3_072)
    assert overall.loc["clipseg · vpt", "dice"] == pytest.approx(0.60)
    out = plot_dice_vs_params(points, tmp_path / "p.png", dpi=50)
    assert out.read_bytes()[:8] == PNG
    assert plot_dice_vs_params(points.iloc[:0], tmp_path / "e.png", dpi=50).read_bytes()[:8] == PNG
