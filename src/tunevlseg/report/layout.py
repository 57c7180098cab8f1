"""Where every report output goes (the grid itself is :class:`tunevlseg.cells.Grid`).

Imported by the workflow (``rules/aggregate.smk``) to declare outputs and by the CLI to write
them, so the two cannot disagree.  No heavy imports here: the Snakefile loads this module.
"""

from __future__ import annotations

from pathlib import Path

from ..cells import Grid

__all__ = ["figure_files", "table_files"]


def figure_files(figures: str | Path, grid: Grid) -> dict:
    """Every figure path under ``figures`` (strings, for Snakemake as well as the CLI).

    Keys: ``heatmap``, ``depth``, ``correlations``, ``domains``, ``domain_table`` (single paths);
    ``history`` and ``importances`` ({cell: path} for :meth:`Grid.tuned_cells`);
    ``qualitative`` ({dataset: path}).  Written only from per-image results: ``critical_difference``
    (png) and ``cd_table`` (its csv); only from the cost frame: ``dice_vs_params`` (png) and
    ``params_table`` (its csv).
    """
    f = Path(figures)

    def cell_path(cell: tuple[str, str, str], name: str) -> str:
        return str(f.joinpath("optuna", *cell, name))

    return {
        "heatmap": str(f / "dice_heatmap.png"),
        "depth": str(f / "depth_vs_dice.png"),
        "correlations": str(f / "depth_vs_dice.csv"),
        "domains": str(f / "domain_dice.png"),
        "domain_table": str(f / "domain_dice.csv"),
        "history": {c: cell_path(c, "history.png") for c in grid.tuned_cells()},
        "importances": {c: cell_path(c, "importances.png") for c in grid.tuned_cells()},
        "qualitative": {d: str(f / "qualitative" / f"{d}.png") for d in grid.datasets},
        "critical_difference": str(f / "critical_difference.png"),
        "cd_table": str(f / "critical_difference.csv"),
        "dice_vs_params": str(f / "dice_vs_params.png"),
        "params_table": str(f / "dice_vs_params.csv"),
    }


def table_files(dice_prefix: str | Path) -> dict:
    """Every table path, from the Dice table's prefix (``<tables>/dice``; strings).

    Keys: ``dice`` ([csv, md, tex, html]: the html is the report's inline table); written only from per-image results: ``pairwise``,
    ``rank_stability`` and ``unstable``; only from the cost frame: ``cost`` (csvs next to the Dice table).
    """
    prefix = Path(dice_prefix)
    folder = prefix.parent
    return {
        "dice": [str(prefix.with_name(prefix.name + s)) for s in (".csv", ".md", ".tex", ".html")],
        "pairwise": str(folder / "pairwise.csv"),
        "rank_stability": str(folder / "rank_stability.csv"),
        "unstable": str(folder / "unstable.csv"),
        "cost": str(folder / "cost.csv"),
    }
