"""What a cell costs: the cost table and Dice against trainable parameters with the Pareto front.

The ``cost`` frame has one row per cell: ``model, method, dataset, n_trainable`` (trainable
parameters at the best configuration), ``train_hours`` (wall hours of all trials and seeds),
``gpu_hours`` (0 without a GPU), ``peak_mem_mb`` and ``n_trials``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from tunevlseg.report.collect import CELL_KEYS, order_datasets, with_row_labels
from tunevlseg.report.figures import PANEL_COLS, colours, new_figure, placeholder, save_figure

__all__ = ["COST_COLUMNS", "cost_table", "dice_vs_params", "pareto_front", "plot_dice_vs_params"]

COST_COLUMNS = (*CELL_KEYS, "n_trainable", "train_hours", "gpu_hours", "peak_mem_mb", "n_trials")
ALL_DATASETS = "mean over datasets"
TITLE = "Test Dice vs trainable parameters (Pareto front: no cell has fewer parameters and higher Dice)"


def cost_table(cost: pd.DataFrame, rows: list[str] | None = None,
               datasets: list[str] | None = None) -> pd.DataFrame:
    """The cost frame checked and ordered by grid row, then dataset; columns :data:`COST_COLUMNS`.

    Raises ``ValueError`` naming the column when one is missing or not numeric, or naming the cell
    when it repeats.  ``rows`` / ``datasets`` give the order (others follow, sorted).
    """
    missing = [c for c in COST_COLUMNS if c not in cost.columns]
    if missing:
        raise ValueError(f"cost frame lacks column(s) {', '.join(missing)}")
    frame = cost[list(COST_COLUMNS)].copy()
    for col in COST_COLUMNS[3:]:
        try:
            frame[col] = pd.to_numeric(frame[col]).astype(float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cost frame: column {col!r} is not numeric ({exc})") from exc
    dup = frame.duplicated(list(CELL_KEYS))
    if dup.any():
        raise ValueError(f"cost frame: cell {'/'.join(frame.loc[dup, list(CELL_KEYS)].iloc[0])} appears twice")
    labelled = with_row_labels(frame)
    row_pos = {r: i for i, r in enumerate(rows or [])}
    ds_pos = {d: i for i, d in enumerate(datasets or [])}
    key = [(row_pos.get(r, len(row_pos)), r, ds_pos.get(d, len(ds_pos)), d)
           for r, d in zip(labelled["row"], labelled["dataset"], strict=True)]
    order = sorted(range(len(key)), key=key.__getitem__)
    return frame.iloc[order].reset_index(drop=True)


def pareto_front(params: np.ndarray, dice: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates (as few or fewer parameters and as high
    or higher Dice, one of the two strictly)."""
    params, dice = np.asarray(params, float), np.asarray(dice, float)
    no_more = params[None, :] <= params[:, None]  # [i, j]: j has at most i's parameters
    no_less = dice[None, :] >= dice[:, None]
    strictly = (params[None, :] < params[:, None]) | (dice[None, :] > dice[:, None])
    return ~(no_more & no_less & strictly).any(axis=1)


def dice_vs_params(cost: pd.DataFrame, dice: pd.DataFrame) -> pd.DataFrame:
    """Points of :func:`plot_dice_vs_params`: one per cell and one per row's mean over datasets.

    ``dice`` has ``model, method, dataset, test_dice_mean``.  Columns ``panel`` (a dataset, or
    "mean over datasets": the mean of the row's Dice and of its trainable parameters over the
    datasets where both are known), ``row, n_trainable, dice, pareto`` (on the panel's Pareto front
    among the points with n_trainable > 0).  Cells without Dice or parameter count are left out.
    """
    merged = cost_table(cost).merge(dice[[*CELL_KEYS, "test_dice_mean"]], on=list(CELL_KEYS), how="inner")
    merged = with_row_labels(merged.rename(columns={"test_dice_mean": "dice"}))
    merged = merged.dropna(subset=["n_trainable", "dice"])
    per_cell = merged.rename(columns={"dataset": "panel"})[["panel", "row", "n_trainable", "dice"]]
    overall = merged.groupby("row", sort=False, as_index=False)[["n_trainable", "dice"]].mean()
    points = pd.concat([per_cell, overall.assign(panel=ALL_DATASETS)], ignore_index=True)
    points["pareto"] = False
    for _, grp in points.loc[points["n_trainable"] > 0].groupby("panel"):
        points.loc[grp.index, "pareto"] = pareto_front(grp["n_trainable"], grp["dice"])
    return points[["panel", "row", "n_trainable", "dice", "pareto"]]


def plot_dice_vs_params(points: pd.DataFrame, out_png: Path, dpi: int = 150, datasets: list[str] | None = None,
                        palette: dict | None = None) -> Path:
    """Dice against trainable parameters (log x), a panel per dataset plus the mean over datasets.

    One colour per ``model · method``; Pareto-front points ringed in black and joined by a step
    line.  Rows with no trainable parameter (zero-shot) cannot sit on a log axis: they are dashed
    horizontal lines.  Dataset panels follow ``datasets`` (the config's order, :func:`order_datasets`).
    No point gives a "no completed trials" PNG.  Written atomically.
    """
    if points.empty:
        return placeholder(out_png, dpi, TITLE)
    per_dataset = points.loc[points["panel"] != ALL_DATASETS].rename(columns={"panel": "dataset"})
    panels = [*order_datasets(per_dataset, datasets), ALL_DATASETS]
    palette = colours(list(dict.fromkeys(points["row"])), palette)
    n_cols = min(PANEL_COLS, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    fig = new_figure(4.6 * n_cols + 2.5, 3.6 * n_rows)
    axes = fig.subplots(n_rows, n_cols, sharey=True, squeeze=False).ravel()
    for i, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        data = points.loc[points["panel"] == panel]
        shown = data.loc[data["n_trainable"] > 0]
        for row in shown["row"]:
            p = shown.loc[shown["row"] == row].iloc[0]
            ax.scatter(p["n_trainable"], p["dice"], s=40, color=palette[row], zorder=3,
                       edgecolor="black" if p["pareto"] else "none", linewidth=1.4)
        front = shown.loc[shown["pareto"]].sort_values("n_trainable")
        ax.step(front["n_trainable"], front["dice"], where="post", color="black", lw=1.0, alpha=0.6, zorder=2)
        for row, value in data.loc[data["n_trainable"] <= 0, ["row", "dice"]].itertuples(index=False):
            ax.axhline(value, color=palette[row], ls="--", lw=1.2)
        if not shown.empty:
            ax.set_xscale("log")
            low, high = shown["n_trainable"].min(), shown["n_trainable"].max()
            ax.set_xlim(low / 3, high * 3)  # at least a decade: major ticks only, no crowded minor labels
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(panel)
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("test Dice" if i % n_cols == 0 else "")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    handles = [Line2D([], [], ls="", marker="o", color=palette[r], label=r) for r in palette
               if (points.loc[points["row"] == r, "n_trainable"] > 0).any()]
    handles += [Line2D([], [], ls="--", color=palette[r], label=f"{r} (0 trainable)") for r in palette
                if (points.loc[points["row"] == r, "n_trainable"] <= 0).any()]
    handles.append(Line2D([], [], color="black", alpha=0.6, marker="o", mfc="white", mec="black",
                          label="Pareto front"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle(TITLE)
    return save_figure(fig, out_png, dpi)
