"""Rankings across datasets: Friedman test, critical-difference diagram, ranking stability.

Ranks are of the rows' (``model · method``) Dice on a dataset, 1 = best.  The across-dataset
analysis uses the *complete* rows (a cell on every dataset), with the datasets as blocks:

* :func:`friedman_ranks` -- Friedman's test (:func:`scipy.stats.friedmanchisquare`) on the rows'
  dataset means, their mean ranks, and the Nemenyi post-hoc p-values
  (:func:`scikit_posthocs.posthoc_nemenyi_friedman`);
* :func:`plot_critical_difference` -- scikit-posthocs' critical-difference diagram of those;
* :func:`rank_stability` -- the share of bootstrap resamples of the test images in which each row
  keeps its rank, per dataset and for the mean rank over datasets.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from matplotlib.figure import Figure
from scipy import stats

from tunevlseg.report.collect import with_row_labels
from tunevlseg.report.figures import colours, new_figure, placeholder, save_figure
from tunevlseg.report.stats import ALPHA, MIN_CD_DATASETS, MIN_CD_ROWS, SEED, dataset_matrix, too_small

__all__ = ["MEAN_RANK", "N_RANK_BOOT", "STABILITY_COLUMNS", "Friedman", "cd_table", "complete_block",
           "critical_difference_figure", "friedman_ranks", "plot_critical_difference", "rank_stability"]

#: ``dataset`` value of the rank-stability rows for the mean rank over datasets.
MEAN_RANK = "mean rank"
N_RANK_BOOT = 1000
STABILITY_COLUMNS = ("dataset", "row", "score", "rank", "keep_share", "n_images", "n_resamples")
MIN_ROWS, MIN_DATASETS = MIN_CD_ROWS, MIN_CD_DATASETS  # one place: tunevlseg.report.stats
#: Tied mean ranks are drawn side by side, this far apart on the rank axis (their labels give the true rank).
TIE_OFFSET = 0.12
CD_TITLE = "Critical difference: mean rank over datasets (1 = best)"


def complete_block(summary: pd.DataFrame, rows: list[str] | None = None,
                   datasets: list[str] | None = None) -> pd.DataFrame:
    """Dataset × row frame of the cells' Dice means (a :func:`~.stats.cell_summary` frame), keeping
    only the rows that have a cell on every dataset (``datasets`` / ``rows`` fix the order)."""
    labelled = with_row_labels(summary) if not summary.empty else summary.assign(row=[])
    wide = labelled.pivot_table(index="dataset", columns="row", values="dice_mean", aggfunc="first")
    datasets = sorted(wide.index) if datasets is None else list(datasets)
    rows = list(wide.columns) if rows is None else [r for r in rows if r in wide.columns]
    wide = wide.reindex(index=datasets, columns=rows).astype(float)
    return wide.dropna(axis=1, how="any").rename_axis(index="dataset", columns=None)


def _ranks(scores: np.ndarray, method: str) -> np.ndarray:
    """Ranks along the last axis, 1 = highest score."""
    return stats.rankdata(-scores, axis=-1, method=method)


@dataclass(frozen=True)
class Friedman:
    """Friedman test over datasets and the Nemenyi post-hoc of the complete rows."""

    mean_ranks: pd.Series  # row -> mean over datasets of its rank (average ranks on ties)
    statistic: float
    p: float
    nemenyi: pd.DataFrame  # row × row p-values
    n_datasets: int

    @property
    def ok(self) -> bool:
        return len(self.mean_ranks) >= MIN_ROWS and self.n_datasets >= MIN_DATASETS


def friedman_ranks(block: pd.DataFrame) -> Friedman:
    """Friedman's chi-square over the datasets (blocks) of a :func:`complete_block` frame.

    ``mean_ranks`` are the rows' mean ranks (1 = best Dice on a dataset, ties averaged, as in the
    test).  With fewer than ``MIN_ROWS`` rows or ``MIN_DATASETS`` datasets the statistic, p and post-hoc are
    NaN / empty.
    """
    n_datasets, rows = block.shape[0], list(block.columns)
    mean_ranks = pd.Series(_ranks(block.to_numpy(float), "average").mean(axis=0) if n_datasets else [],
                           index=rows, dtype=float)
    if len(rows) < MIN_ROWS or n_datasets < MIN_DATASETS:
        return Friedman(mean_ranks, math.nan, math.nan, pd.DataFrame(dtype=float), n_datasets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every dataset ranking the rows identically is fine
        result = stats.friedmanchisquare(*(block[r].to_numpy(float) for r in rows))
        nemenyi = sp.posthoc_nemenyi_friedman(block.to_numpy(float))
    nemenyi.index = nemenyi.columns = rows
    return Friedman(mean_ranks, float(result.statistic), float(result.pvalue), nemenyi.astype(float),
                    n_datasets)


def cd_table(friedman: Friedman) -> pd.DataFrame:
    """The numbers behind the critical-difference diagram, one line per row (by mean rank).

    Columns ``row, mean_rank, n_datasets, friedman_chi2, friedman_p`` (the last three the same on
    every line) and one ``nemenyi_p:<row>`` column per row.
    """
    order = friedman.mean_ranks.sort_values(kind="stable").index
    out = pd.DataFrame({"row": list(order), "mean_rank": friedman.mean_ranks[order].to_numpy(),
                        "n_datasets": friedman.n_datasets, "friedman_chi2": friedman.statistic,
                        "friedman_p": friedman.p})
    if not friedman.nemenyi.empty:
        for other in order:
            out[f"nemenyi_p:{other}"] = friedman.nemenyi.loc[order, other].to_numpy()
    return out


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def spread_ties(ranks: pd.Series, offset: float = TIE_OFFSET) -> pd.Series:
    """Where the rows are drawn: their mean ranks, rows with the same mean rank moved apart by ``offset``
    around it (in table order), so that no marker hides another."""
    out = ranks.astype(float).copy()
    for _, tied in ranks.groupby(ranks.round(9), sort=False):
        if len(tied) > 1:
            out[tied.index] = tied.to_numpy(float) + offset * (np.arange(len(tied)) - (len(tied) - 1) / 2)
    return out


def critical_difference_figure(friedman: Friedman, alpha: float = ALPHA, palette: dict | None = None) -> Figure | None:
    """scikit-posthocs' critical-difference diagram of :func:`friedman_ranks`; None when not
    :attr:`Friedman.ok`.

    Rows sit at their mean rank (1 = best, left), labelled ``row (mean rank)``; rows with the same
    mean rank are drawn :data:`TIE_OFFSET` apart (:func:`spread_ties`), their labels keep the true rank.
    A bar joins rows whose Nemenyi p-value is at least ``alpha`` (no significant difference).  The
    title gives Friedman's chi-square and p.
    """
    if not friedman.ok:
        return None
    ranks = friedman.mean_ranks
    label = {r: f"{r} ({ranks[r]:.2f})" for r in ranks.index}  # the true rank, also where ties were moved
    drawn = spread_ties(ranks).rename(index=label)
    fig = new_figure(8.0, 1.6 + 0.32 * len(ranks))
    ax = fig.add_subplot()
    row_colours = colours(list(ranks.index), palette)
    sp.critical_difference_diagram(drawn, friedman.nemenyi.rename(index=label, columns=label), ax=ax, alpha=alpha,
                                   color_palette={label[r]: c for r, c in row_colours.items()},
                                   label_fmt_left="{label}", label_fmt_right="{label}",
                                   label_props={"fontsize": 8})
    ax.set_title(f"{CD_TITLE}\n{friedman.n_datasets} datasets, {len(ranks)} rows; Friedman "
                 f"χ² = {friedman.statistic:.2f}, p = {_p_text(friedman.p)}; bars: Nemenyi p ≥ {alpha:g}",
                 fontsize=9, pad=18)
    return fig


def plot_critical_difference(friedman: Friedman, out_png: Path, dpi: int = 150,
                             alpha: float = ALPHA, palette: dict | None = None) -> Path:
    """Save :func:`critical_difference_figure` atomically, or a placeholder saying what is missing
    (fewer than ``MIN_ROWS`` rows with a cell on every dataset, or fewer than ``MIN_DATASETS`` datasets)."""
    fig = critical_difference_figure(friedman, alpha, palette)
    if fig is None:
        short = [too_small(n, need, what) for n, need, what in
                 ((friedman.n_datasets, MIN_DATASETS, "datasets"),
                  (len(friedman.mean_ranks), MIN_ROWS, "rows with a cell on every dataset")) if n < need]
        return placeholder(out_png, dpi, CD_TITLE, "\n".join(short))
    return save_figure(fig, out_png, dpi)


# --------------------------------------------------------------------------- stability


def _resampled_means(matrix: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, rows) means of ``matrix`` (images × rows) over bootstrap resamples of its images."""
    n = matrix.shape[0]
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)  # one resample per line
    return counts @ matrix / n


def rank_stability(means: pd.DataFrame, rows: list[str] | None = None, n_resamples: int = N_RANK_BOOT,
                   seed: int = SEED) -> pd.DataFrame:
    """How often each row keeps its rank when the test images are resampled.

    ``means`` is an :func:`~.stats.image_means` frame.  Per dataset (sorted), the rows are compared
    on the images they all share (:func:`~.stats.dataset_matrix`); the images are resampled with
    replacement ``n_resamples`` times (one seeded generator for the whole table, every row of a
    dataset sees the same resample) and in each resample the rows are ranked by mean Dice
    (1 = best, ties share the better rank).  ``keep_share`` is the fraction of resamples in which a
    row's rank equals its rank on the full test set (``rank``; ``score`` = its mean Dice there).

    Lines with ``dataset == "mean rank"`` do the same for the rows with a cell on every dataset:
    ``score`` is the mean over datasets of the row's rank (ties averaged, as in Friedman's test),
    ``rank`` its position by that mean rank, and resample ``b`` of every dataset together give one
    resampled mean rank.  Columns ``dataset, row, score, rank, keep_share, n_images,
    n_resamples``.
    """
    rng = np.random.default_rng(seed)
    records, friedman_parts, full_parts, images = [], {}, {}, {}
    for dataset in sorted(means["dataset"].unique()):
        wide = dataset_matrix(means, dataset, rows)
        if wide.shape[1] == 0 or wide.shape[0] == 0:
            continue
        matrix = wide.to_numpy(float)
        full = matrix.mean(axis=0)
        boot = _resampled_means(matrix, n_resamples, rng)
        rank, boot_rank = _ranks(full, "min"), _ranks(boot, "min")
        keep = (boot_rank == rank).mean(axis=0)
        records += [(dataset, r, float(s), int(k), float(q), len(wide), n_resamples)
                    for r, s, k, q in zip(wide.columns, full, rank, keep, strict=True)]
        friedman_parts[dataset] = pd.DataFrame(boot, columns=wide.columns)
        full_parts[dataset] = pd.Series(full, index=wide.columns)
        images[dataset] = len(wide)
    complete = [r for r in (rows or list(dict.fromkeys(c for f in full_parts.values() for c in f.index)))
                if all(r in f.index for f in full_parts.values())]
    if full_parts and complete:
        full_rank = np.mean([_ranks(f[complete].to_numpy(), "average") for f in full_parts.values()], axis=0)
        boot_rank = np.mean([_ranks(b[complete].to_numpy(), "average") for b in friedman_parts.values()],
                            axis=0)
        position, boot_position = _ranks(-full_rank, "min"), _ranks(-boot_rank, "min")
        keep = (boot_position == position).mean(axis=0)
        records += [(MEAN_RANK, r, float(s), int(k), float(q), sum(images.values()), n_resamples)
                    for r, s, k, q in zip(complete, full_rank, position, keep, strict=True)]
    out = pd.DataFrame.from_records(records, columns=list(STABILITY_COLUMNS))
    return out.astype({"score": float, "rank": int, "keep_share": float, "n_images": int, "n_resamples": int})
