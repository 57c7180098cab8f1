"""The benchmark grid and where every report output goes.

Imported by the workflow (``rules/aggregate.smk``) to declare outputs and by the CLI to write
them, so the two cannot disagree.  No heavy imports here: the Snakefile loads this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..models.registry import supports

__all__ = ["EXAMPLES_FILE", "STUDYLESS", "Grid", "cell_dir", "figure_files", "table_files"]

#: Methods whose cells have no Optuna study (nothing to tune).
STUDYLESS = frozenset({"zeroshot"})
#: Qualitative examples of a trial, written by :func:`tunevlseg.train.examples.save_examples`
#: as ``<cell>/trials/<nnn>/examples.npz``.
EXAMPLES_FILE = "examples.npz"
ROW_SEP = " · "


@dataclass(frozen=True)
class Grid:
    """The configured (model, method, dataset) cells and each dataset's domain."""

    models: tuple[str, ...]
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    domains: dict = field(default_factory=dict, hash=False)

    @classmethod
    def from_settings(cls, opts: dict) -> "Grid":
        """Grid from a rule's settings (``models``, ``methods``, ``datasets``, optional ``domains``)."""
        missing = [k for k in ("models", "methods", "datasets") if not opts.get(k)]
        if missing:
            raise ValueError(f"report settings lack {', '.join(missing)} (the benchmark grid)")
        domains = {k: v for k, v in (opts.get("domains") or {}).items() if v}
        return cls(tuple(opts["models"]), tuple(opts["methods"]), tuple(opts["datasets"]), domains)

    def pairs(self) -> list[tuple[str, str]]:
        """(model, method) pairs the models can run (CRIS has no vision prompts), model-major."""
        return [(m, k) for m in self.models for k in self.methods if supports(m, k)]

    def cells(self) -> list[tuple[str, str, str]]:
        """Every runnable (model, method, dataset), model-major."""
        return [(m, k, d) for m, k in self.pairs() for d in self.datasets]

    def tuned_cells(self) -> list[tuple[str, str, str]]:
        """Cells that have an Optuna study (methods other than ``zeroshot``)."""
        return [c for c in self.cells() if c[1] not in STUDYLESS]

    def rows(self) -> list[str]:
        """Row labels ``model · method`` in grid order."""
        return [f"{m}{ROW_SEP}{k}" for m, k in self.pairs()]


def cell_dir(results: str | Path, model: str, method: str, dataset: str) -> Path:
    """Folder of one cell's tuning outputs: ``<results>/cells/<model>/<method>/<dataset>``."""
    return Path(results) / "cells" / model / method / dataset


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

    Keys: ``dice`` ([csv, md, tex]); written only from per-image results: ``pairwise`` and
    ``rank_stability``; only from the cost frame: ``cost`` (csvs next to the Dice table).
    """
    prefix = Path(dice_prefix)
    folder = prefix.parent
    return {
        "dice": [str(prefix.with_name(prefix.name + s)) for s in (".csv", ".md", ".tex")],
        "pairwise": str(folder / "pairwise.csv"),
        "rank_stability": str(folder / "rank_stability.csv"),
        "cost": str(folder / "cost.csv"),
    }
