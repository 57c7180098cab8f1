"""Per-image statistics of the benchmark: cell means with bootstrap CIs and paired tests per dataset.

Input is the ``per_image`` frame (columns ``model, method, dataset, replicate, id, dice``, optional
``iou``): the test Dice of every image for every retrained seed (*replicate*) of a cell's best
configuration.  Everything here is a pure function, frames in, frames out.

* A cell's number is the mean over replicates of the per-image mean Dice; its 95 % CI is a
  percentile bootstrap (:func:`scipy.stats.bootstrap`) over test images of the replicate-averaged
  per-image Dice (:func:`cell_summary`).
* Two rows of one dataset are compared on the images they share, image by image, with the Wilcoxon
  signed-rank test (:func:`scipy.stats.wilcoxon`, zeros split between the signs: ``zsplit``),
  Holm-corrected within the dataset (:func:`statsmodels.stats.multitest.multipletests`):
  :func:`pairwise_tests` (every pair, two-sided) and :func:`versus_best` (every row against the
  dataset's best row, one-sided "worse").
"""

from __future__ import annotations

import gc
import logging
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from tunevlseg.report.collect import CELL_KEYS, order_rows, row_label

log = logging.getLogger(__name__)

__all__ = [
    "ALPHA",
    "BOOT_METHOD",
    "CONFIDENCE",
    "N_BOOT",
    "PAIRWISE_COLUMNS",
    "PER_IMAGE_COLUMNS",
    "SEED",
    "SUMMARY_COLUMNS",
    "VS_BEST_COLUMNS",
    "ZERO_METHOD",
    "cell_summary",
    "check_per_image",
    "dataset_matrix",
    "holm",
    "image_means",
    "pairwise_tests",
    "rank_biserial",
    "summary_as_best",
    "versus_best",
    "wilcoxon_pair",
]

PER_IMAGE_COLUMNS = (*CELL_KEYS, "replicate", "id", "dice")
SUMMARY_COLUMNS = (*CELL_KEYS, "n_seeds", "n_images", "dice_mean", "dice_std", "ci_low", "ci_high")
PAIRWISE_COLUMNS = ("dataset", "row_a", "row_b", "n", "median_diff", "p", "p_holm", "effect_size")
VS_BEST_COLUMNS = ("dataset", "row", "best_row", "n", "p", "p_holm", "not_worse")

#: Confidence level of every interval; resamples and seed of the cell-mean bootstrap.
CONFIDENCE = 0.95
N_BOOT = 2000
SEED = 0
BOOT_METHOD = "percentile"
#: Significance level of the "not significantly worse than the best" marks.
ALPHA = 0.05
#: Wilcoxon's handling of zero differences (images where both rows score the same): their ranks
#: are split equally between the positive and the negative sum, so they pull towards "no difference".
ZERO_METHOD = "zsplit"


# --------------------------------------------------------------------------- input


def check_per_image(per_image: pd.DataFrame) -> pd.DataFrame:
    """Validated copy of a per-image frame (``id`` as str, ``replicate`` int, ``dice`` float).

    Raises ``ValueError`` naming the problem (and the cell) when a required column is missing, a
    Dice is not a finite number in [0, 1], a (cell, replicate, id) repeats, or the replicates of a
    cell were evaluated on different test images.
    """
    missing = [c for c in PER_IMAGE_COLUMNS if c not in per_image.columns]
    if missing:
        raise ValueError(f"per-image results lack column(s) {', '.join(missing)}")
    frame = per_image.copy()
    for col in CELL_KEYS:
        frame[col] = frame[col].astype(str)
    frame["id"] = frame["id"].astype(str)
    try:
        frame["dice"] = pd.to_numeric(frame["dice"]).astype(float)
        frame["replicate"] = pd.to_numeric(frame["replicate"]).astype(int)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"per-image results: dice / replicate not numeric ({exc})") from exc
    bad = frame.loc[~frame["dice"].between(0.0, 1.0)]  # NaN fails between()
    if not bad.empty:
        r = bad.iloc[0]
        raise ValueError(f"per-image results: Dice {r['dice']!r} of image {r['id']!r} in cell "
                         f"{'/'.join(r[list(CELL_KEYS)])} replicate {r['replicate']} is not in [0, 1]")
    dup = frame.duplicated([*CELL_KEYS, "replicate", "id"])
    if dup.any():
        r = frame.loc[dup].iloc[0]
        raise ValueError(f"per-image results: image {r['id']!r} appears twice in cell "
                         f"{'/'.join(r[list(CELL_KEYS)])} replicate {r['replicate']}")
    # same images in every replicate: each (cell, id) is seen once per replicate of the cell
    keys = list(CELL_KEYS)
    seen = frame.groupby([*keys, "id"], sort=False).size().rename("seen").reset_index()
    seen = seen.merge(frame.groupby(keys, sort=False)["replicate"].nunique().rename("reps").reset_index(), on=keys)
    uneven = seen.loc[seen["seen"] != seen["reps"]]
    if not uneven.empty:
        r = uneven.iloc[0]
        raise ValueError(f"per-image results: the replicates of cell {'/'.join(r[keys])} were evaluated on "
                         f"different test images (image {r['id']!r} is in {r['seen']} of {r['reps']} replicates)")
    return frame


def image_means(per_image: pd.DataFrame) -> pd.DataFrame:
    """Replicate-averaged Dice per (cell, test image).

    Columns ``model, method, dataset, row, id, dice, n_seeds`` (``row`` = ``model · method``,
    ``n_seeds`` = replicates of the cell).  ``per_image`` is checked by :func:`check_per_image`.
    """
    return _image_means(check_per_image(per_image))


def _image_means(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [*CELL_KEYS, "id"]
    out = frame.groupby(keys, sort=False, as_index=False).agg(dice=("dice", "mean"),
                                                                 n_seeds=("replicate", "nunique"))
    out.insert(3, "row", [row_label(m, k) for m, k in zip(out["model"], out["method"], strict=True)])
    return out


def dataset_matrix(means: pd.DataFrame, dataset: str, rows: list[str] | None = None) -> pd.DataFrame:
    """Replicate-averaged Dice of one dataset as a wide frame: index ``id``, one column per row.

    Only images that every included row has are kept (pairing); ``rows`` (default: the rows present
    in grid order) fixes the columns, rows absent on the dataset are dropped.
    """
    sub = means.loc[means["dataset"] == dataset]
    wide = sub.pivot(index="id", columns="row", values="dice")
    rows = order_rows(sub) if rows is None else [r for r in rows if r in wide.columns]
    wide = wide.reindex(columns=rows)
    complete = wide.dropna(axis=0, how="any")
    if len(complete) < len(wide):
        log.warning("%s: %d of %d test images are missing from some row; rows are compared on the %d "
                    "they share", dataset, len(wide) - len(complete), len(wide), len(complete))
    wide = complete
    wide.columns.name = None
    return wide.sort_index()


# --------------------------------------------------------------------------- cells


def _bootstrap_mean_ci(values: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float]:
    if len(values) < 2:
        return np.nan, np.nan
    if np.ptp(values) == 0:  # every image scores the same: the interval is that value
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=CONFIDENCE,
                          method=BOOT_METHOD, vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def cell_summary(per_image: pd.DataFrame, n_resamples: int = N_BOOT, seed: int = SEED) -> pd.DataFrame:
    """One row per cell: ``model, method, dataset, n_seeds, n_images, dice_mean, dice_std, ci_low, ci_high``.

    ``dice_mean`` is the mean over replicates of each replicate's mean per-image Dice; ``dice_std``
    the (population) standard deviation over test images of the replicate-averaged per-image Dice;
    ``[ci_low, ci_high]`` the 95 % percentile bootstrap interval of the mean, resampling test images
    (``n_resamples`` resamples, seeded) of the replicate-averaged per-image Dice.  One image gives
    a NaN interval.
    """
    frame = check_per_image(per_image)
    rep_means = frame.groupby([*CELL_KEYS, "replicate"], sort=False)["dice"].mean()
    per_cell = rep_means.groupby(level=list(CELL_KEYS), sort=False).agg(["mean", "size"])
    averaged = _image_means(frame)
    records = []
    for cell, grp in averaged.groupby(list(CELL_KEYS), sort=False):
        values = grp["dice"].to_numpy(float)
        low, high = _bootstrap_mean_ci(values, n_resamples, seed)
        records.append((*cell, int(per_cell.loc[cell, "size"]), len(values),
                        float(per_cell.loc[cell, "mean"]), float(values.std()), low, high))
    out = pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))
    return out.astype({"n_seeds": int, "n_images": int})


def summary_as_best(summary: pd.DataFrame) -> pd.DataFrame:
    """A :func:`cell_summary` frame with the column names of the ``best.json`` frame.

    ``test_dice_mean`` / ``test_dice_std`` (plus ``ci_low``, ``ci_high``, ``n_seeds``, ``n_test``), so
    the Dice table, heat map and domain bars show the seed-averaged numbers.
    """
    return summary.rename(columns={"dice_mean": "test_dice_mean", "dice_std": "test_dice_std",
                                   "n_images": "n_test"})


# --------------------------------------------------------------------------- paired tests


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels' ``multipletests(method="holm")``); NaNs stay NaN and are
    not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        gc.freeze()  # multipletests' Holm branch calls gc.collect(): ~0.15 s per call with a large heap
        try:
            out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
        finally:
            gc.unfreeze()
    return out


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of the differences ``diff`` (Kerby's simple difference).

    ``(T+ - T-) / (T+ + T-)`` with T± the Wilcoxon rank sums of positive / negative differences over
    all n pairs (``T+ + T- = n (n + 1) / 2``); zero differences' ranks count half to each sum (the
    ``zsplit`` convention of the test), so they pull towards 0.  1 when every difference is
    positive, -1 when all are negative, 0 when all are zero.  T+ is SciPy's statistic.
    """
    diff = np.asarray(diff, dtype=float)
    n = len(diff)
    if n == 0:
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_plus = stats.wilcoxon(diff, zero_method=ZERO_METHOD, alternative="greater").statistic
    return float(2.0 * t_plus / (n * (n + 1) / 2.0) - 1.0)


def wilcoxon_pair(diff: np.ndarray, alternative: str = "two-sided") -> float:
    """p-value of the Wilcoxon signed-rank test of the paired differences ``diff`` (``zsplit``;
    SciPy's ``method="auto"``: exact for n <= 50 without ties or zeros, an exact sign-flip
    permutation for n <= 13 with them, else the normal approximation with tie correction).
    NaN without pairs; 1 when every difference is zero."""
    diff = np.asarray(diff, dtype=float)
    if len(diff) == 0:
        return np.nan
    if not diff.any():
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample / tie notes of the normal approximation
        return float(stats.wilcoxon(diff, zero_method=ZERO_METHOD, alternative=alternative).pvalue)


def _rows_by_dataset(means: pd.DataFrame, rows: list[str] | None):
    for dataset in sorted(means["dataset"].unique()):
        yield dataset, dataset_matrix(means, dataset, rows)


def pairwise_tests(means: pd.DataFrame, rows: list[str] | None = None) -> pd.DataFrame:
    """Every pair of rows per dataset on the replicate-averaged per-image Dice (an :func:`image_means` frame).

    For rows ``i < j`` in ``rows`` order (grid order: zero-shot first) the pair is
    ``row_a = rows[j]``, ``row_b = rows[i]`` and the differences are ``dice_a - dice_b`` over the
    ``n`` images every row of the dataset has (:func:`dataset_matrix`): so each method appears as
    ``row_a`` against its model's zero-shot row.  ``median_diff`` is their median, ``p`` the two-sided :func:`wilcoxon_pair` p-value,
    ``p_holm`` Holm-adjusted over all pairs of the dataset, ``effect_size`` the
    :func:`rank_biserial` (positive when ``row_a`` is better).
    """
    records = []
    for dataset, wide in _rows_by_dataset(means, rows):
        block = []
        cols = list(wide.columns)
        for i, row_b in enumerate(cols):
            for row_a in cols[i + 1:]:
                diff = (wide[row_a] - wide[row_b]).to_numpy(float)
                block.append([dataset, row_a, row_b, len(diff),
                              float(np.median(diff)) if len(diff) else np.nan,
                              wilcoxon_pair(diff), np.nan, rank_biserial(diff)])
        if block:
            p_holm = holm([b[5] for b in block])
            for b, q in zip(block, p_holm, strict=True):
                b[6] = q
        records += block
    out = pd.DataFrame.from_records(records, columns=list(PAIRWISE_COLUMNS))
    return out.astype({"n": int, "median_diff": float, "p": float, "p_holm": float, "effect_size": float})


def versus_best(means: pd.DataFrame, rows: list[str] | None = None, alpha: float = ALPHA) -> pd.DataFrame:
    """Every row of each dataset against that dataset's best row: is it significantly worse?

    The best row has the highest mean of the replicate-averaged per-image Dice over the images all
    rows of the dataset share (the first in ``rows`` order on a tie).  Every other row gets the
    one-sided Wilcoxon signed-rank p-value of ``dice_row - dice_best < 0`` over those images
    (``zsplit``), Holm-adjusted over the dataset's other rows; ``not_worse`` is ``p_holm >= alpha``
    (True for the best row itself, whose ``p`` / ``p_holm`` are NaN).  Columns ``dataset, row,
    best_row, n, p, p_holm, not_worse``.
    """
    records = []
    for dataset, wide in _rows_by_dataset(means, rows):
        if wide.shape[1] == 0:
            continue
        best = wide.mean(axis=0).idxmax()
        others = [r for r in wide.columns if r != best]
        p = [wilcoxon_pair((wide[r] - wide[best]).to_numpy(float), alternative="less") for r in others]
        p_holm = holm(p)
        records.append((dataset, best, best, len(wide), np.nan, np.nan, True))
        records += [(dataset, r, best, len(wide), pi, qi, bool(not qi < alpha))
                    for r, pi, qi in zip(others, p, p_holm, strict=True)]
    out = pd.DataFrame.from_records(records, columns=list(VS_BEST_COLUMNS))
    return out.astype({"n": int, "p": float, "p_holm": float, "not_worse": bool})
