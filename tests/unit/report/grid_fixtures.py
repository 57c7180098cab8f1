"""Synthetic benchmark grids for the statistics tests and the report benchmark.

Per-image Dice is built with a known structure: every row of a dataset shares the image's
difficulty (so rows are paired), a row adds a fixed offset, and each replicate adds a little noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tunevlseg.cells import Grid, cell_dir


def per_image_frame(grid: Grid, offsets: dict[str, float], n_images: int = 50, n_seeds: int = 3,
                    noise: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """Per-image results of every cell of ``grid``: Dice = clip(difficulty + offsets[row] + noise).

    Zero-shot cells get one replicate, the others ``n_seeds``.  ``offsets`` maps a row label to its
    offset (missing rows: 0).
    """
    rng = np.random.default_rng(seed)
    records = []
    for dataset in grid.datasets:
        difficulty = rng.uniform(0.3, 0.7, n_images)
        ids = [f"{dataset}_{i:04d}" for i in range(n_images)]
        for model, method in grid.pairs():
            row = f"{model} · {method}"
            for rep in range(1 if method == "zeroshot" else n_seeds):
                dice = np.clip(difficulty + offsets.get(row, 0.0) + rng.normal(0, noise, n_images), 0, 1)
                records += [(model, method, dataset, rep, i, d, d * 0.8) for i, d in zip(ids, dice, strict=True)]
    return pd.DataFrame.from_records(records, columns=["model", "method", "dataset", "replicate", "id", "dice", "iou"])


def cost_frame(grid: Grid, seed: int = 0) -> pd.DataFrame:
    """A cost line per cell: zero-shot trains nothing, finetune everything, prompts a few thousand."""
    rng = np.random.default_rng(seed)
    params = {"zeroshot": 0, "finetune": 150_000_000}
    records = [(m, k, d, params.get(k, int(rng.integers(2_000, 200_000))), float(rng.uniform(0.1, 3)),
                0.0, float(rng.uniform(500, 4000)), 0 if k == "zeroshot" else 20)
               for m, k, d in grid.cells()]
    return pd.DataFrame.from_records(records, columns=["model", "method", "dataset", "n_trainable",
                                                       "train_hours", "gpu_hours", "peak_mem_mb", "n_trials"])


def write_cells(results: Path, grid: Grid, per_image: pd.DataFrame, n_trials: int = 20,
                seed: int = 0) -> dict:
    """``best.json`` and ``trials.csv`` of every cell (test Dice = the cell's first replicate); the
    cells' folders, as :func:`tunevlseg.report.render.find_cells` returns them."""
    rng = np.random.default_rng(seed)
    first = per_image[per_image["replicate"] == 0].groupby(["model", "method", "dataset"])["dice"].agg(["mean", "std"])
    cells = {}
    for cell in grid.cells():
        folder = cell_dir(results, *cell)
        folder.mkdir(parents=True, exist_ok=True)
        mean, std = first.loc[cell]
        (folder / "best.json").write_text(json.dumps({
            "model": cell[0], "method": cell[1], "dataset": cell[2], "trial": 0, "params": {"depth": 2},
            "val_dice": mean, "test_dice_mean": mean, "test_dice_std": std, "n_test": 10}))
        n = 1 if cell[1] == "zeroshot" else n_trials
        depth = rng.integers(1, 13, n) if cell[1] not in ("zeroshot", "finetune") else np.zeros(n, int)
        pd.DataFrame({"model": cell[0], "method": cell[1], "dataset": cell[2], "trial": range(n),
                      "state": "COMPLETE", "depth": depth,
                      "test_dice_mean": np.clip(mean + 0.01 * depth + rng.normal(0, 0.05, n), 0, 1)}
                     ).to_csv(folder / "trials.csv", index=False)
        cells[cell] = folder
    return cells
