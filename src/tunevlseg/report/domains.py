"""Test Dice per image domain (radiology / non-radiology / natural), as a table and grouped bars.

A dataset's domain comes from the config (``datasets.<name>.domain``); datasets without one are
grouped as ``unspecified``.  The value of a (model · method, domain) bar is the plain mean of the
test Dice means of that row's cells in the domain's datasets (cells present only), so every
dataset weighs the same whatever its size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tunevlseg.report.figures import colours, new_figure, placeholder, save_figure
from tunevlseg.report.tables import MISSING, dice_numeric

__all__ = ["DOMAINS", "UNSPECIFIED", "domain_bars_figure", "domain_means", "plot_domain_bars"]

#: Allowed domains, in plotting order (the config schema's enum).
DOMAINS = ("radiology", "non-radiology", "natural")
UNSPECIFIED = "unspecified"
COLUMNS = ("row", "domain", "n_cells", "n_datasets", "datasets", "dice_mean")


def _domain_order(domains: Mapping[str, str], datasets: list[str]) -> list[str]:
    used = {domains.get(d, UNSPECIFIED) for d in datasets}
    unknown = sorted(used - set(DOMAINS) - {UNSPECIFIED})
    if unknown:
        raise ValueError(f"unknown dataset domain(s) {unknown}; allowed: {list(DOMAINS)}")
    return [d for d in (*DOMAINS, UNSPECIFIED) if d in used]


def domain_means(best: pd.DataFrame, domains: Mapping[str, str], datasets: list[str] | None = None,
                 rows: list[str] | None = None) -> pd.DataFrame:
    """Mean test Dice per (``model · method`` row, domain).

    ``domains`` maps dataset → domain; ``datasets`` / ``rows`` fix the grid as in
    :func:`tunevlseg.report.tables.dice_numeric` (absent cells are allowed).  Columns
    ``row, domain, n_cells, n_datasets, datasets, dice_mean``: ``n_cells`` cells with a Dice out of
    the ``n_datasets`` configured datasets of that domain (``datasets`` lists them, ";"-joined);
    ``dice_mean`` is NaN when ``n_cells`` is 0.  Rows in grid order, domains in
    radiology / non-radiology / natural / unspecified order.
    """
    means, _ = dice_numeric(best, datasets, rows)
    means = means.drop(columns="mean")
    columns = list(means.columns)
    records = []
    for domain in _domain_order(domains, columns):
        members = [d for d in columns if domains.get(d, UNSPECIFIED) == domain]
        block = means[members]
        for row in means.index:
            values = block.loc[row].dropna()
            records.append((row, domain, len(values), len(members), ";".join(members),
                            float(values.mean()) if len(values) else math.nan))
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    return frame.astype({"n_cells": int, "n_datasets": int, "dice_mean": float})


def domain_bars_figure(table: pd.DataFrame, palette: dict | None = None) -> Figure | None:
    """Grouped bars from a :func:`domain_means` table: one group per domain, one bar per row.

    Bar container ``i`` of the axes holds row ``i``'s bars (label = row), one per domain in
    table order; a missing mean is a NaN-height bar marked "—".  ``None`` when no mean exists.
    """
    if table.empty or table["dice_mean"].isna().all():
        return None
    rows = list(dict.fromkeys(table["row"]))
    domain_list = list(dict.fromkeys(table["domain"]))
    palette = colours(rows, palette)
    width = 0.8 / len(rows)
    fig = new_figure(2.5 + 0.35 * len(rows) * len(domain_list), 4.6)
    ax = fig.add_subplot()
    x = np.arange(len(domain_list), dtype=float)
    for i, row in enumerate(rows):
        sub = table.loc[table["row"] == row].set_index("domain").reindex(domain_list)
        heights = sub["dice_mean"].to_numpy(float)
        pos = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(pos, heights, width * 0.92, label=row, color=palette[row])
        texts = [MISSING if math.isnan(h) else f"{h:.2f}" for h in heights]
        ax.bar_label(bars, labels=[t if t != MISSING else "" for t in texts], fontsize=6, rotation=90,
                     padding=2)
        for p, h in zip(pos, heights, strict=True):
            if math.isnan(h):
                ax.text(p, 0.01, MISSING, ha="center", va="bottom", fontsize=8)
    counts = table.drop_duplicates("domain").set_index("domain")["n_datasets"]
    ax.set_xticks(x, [f"{d}\n({counts[d]} dataset{'s' if counts[d] != 1 else ''})" for d in domain_list])
    ax.set_ylim(0.0, 1.08)
    ax.set_ylabel("test Dice (mean over the domain's datasets)")
    ax.set_title("Test Dice per image domain")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def plot_domain_bars(table: pd.DataFrame, out_png: Path, dpi: int = 150, palette: dict | None = None) -> Path:
    """Save :func:`domain_bars_figure` (or a "no completed trials" PNG) atomically; return ``out_png``."""
    fig = domain_bars_figure(table, palette)
    if fig is None:
        return placeholder(out_png, dpi, "Test Dice per image domain")
    return save_figure(fig, out_png, dpi)
