"""Per-image statistics of the benchmark: cell means with bootstrap CIs and paired tests per dataset.

Input is the ``per_image`` frame (columns ``model, method, dataset, replicate, id, dice``, optional
``iou``): the test Dice of every image for every retrained seed (*replicate*) of a cell's best
configuration.  Everything here is a pure function, frames in, frames out.

* A cell's number is the mean over replicates of the per-image mean Dice; its 95 % CI is a
  two-way percentile bootstrap (:func:`two_way_bootstrap_ci`) that resamples the seed replicates and
  the test images independently (Owen 2007, "The pigeonhole bootstrap": replicates and images are
  crossed factors), so the interval carries seed variance as well as test-set sampling (Bouthillier
  et al. 2021, "Accounting for variance in machine learning benchmarks"; Agarwal et al. 2021 resample
  runs likewise).  With one replicate, or identical replicates, it is the ordinary percentile
  bootstrap over images (:func:`scipy.stats.bootstrap`'s numbers).  :func:`cell_summary` also gives
  the replicates' spread (their means, SD, min, max).
* Two rows of one dataset are compared on the images they share, image by image, with the Wilcoxon
  signed-rank test (:func:`scipy.stats.wilcoxon`, zeros split between the signs: ``zsplit``),
  Holm-corrected within the dataset (:func:`statsmodels.stats.multitest.multipletests`):
  :func:`pairwise_tests` (every pair, two-sided) and :func:`versus_best` (every row against the
  dataset's best row, one-sided "worse").  With seed replicates the test is an intersection-union
  test (:func:`replicate_p`): a difference is claimed only if it is significant for *every*
  combination of a replicate of one row with a replicate of the other (p = the largest of their
  p-values), so one lucky or collapsed seed cannot make a row look better or worse than the seeds
  allow.  With one replicate per row it is the plain test on the images.
* :func:`unstable_cells` lists the cells whose replicates disagree.
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
    "MIN_CD_DATASETS",
    "MIN_CD_ROWS",
    "MIN_IMPORTANCE_TRIALS",
    "MIN_POOLED_STRATUM",
    "MIN_RHO_TRIALS",
    "BOOT_METHOD",
    "CONFIDENCE",
    "N_BOOT",
    "PAIRWISE_COLUMNS",
    "PER_IMAGE_COLUMNS",
    "SEED",
    "SUMMARY_COLUMNS",
    "VS_BEST_COLUMNS",
    "ZERO_METHOD",
    "UNSTABLE_COLUMNS",
    "UNSTABLE_SPREAD",
    "cell_summary",
    "check_per_image",
    "dataset_matrix",
    "holm",
    "image_means",
    "pairwise_tests",
    "rank_biserial",
    "replicate_matrices",
    "replicate_p",
    "summary_as_best",
    "too_small",
    "two_way_bootstrap_ci",
    "unstable_cells",
    "versus_best",
    "wilcoxon_pair",
]

#: Fewest observations before the report shows a statistic; below it a figure says :func:`too_small`
#: instead of a number or a misleading plot (the captions, workflow/report/*.rst, state each).
#: Spearman ρ of prompt depth vs test Dice (per dataset and pooled, and its bootstrap interval): with
#: n <= 4 no ρ can reach two-sided p < 0.05 (exact permutation distribution; n = 4: p >= 1/12).
MIN_RHO_TRIALS = 5
#: A dataset's trials enter the pooled ρ only from this many: with 2 its ranks give ρ = ±1 whatever Dice is.
MIN_POOLED_STRATUM = 3
#: Completed trials for Optuna's parameter importances (PED-ANOVA compares the best 10 % of the trials
#: with all of them: with fewer than 10 trials that is at most one trial).
MIN_IMPORTANCE_TRIALS = 10
#: Critical-difference diagram (Friedman / Nemenyi): rows with a cell on every dataset, and datasets.
MIN_CD_ROWS, MIN_CD_DATASETS = 3, 3


def too_small(n: int, needed: int, what: str = "") -> str:
    """The note shown instead of a statistic: ``n too small (n = 2, needs ≥ 5)``."""
    return f"n too small (n = {n}{' ' + what if what else ''}, needs ≥ {needed})"


PER_IMAGE_COLUMNS = (*CELL_KEYS, "replicate", "id", "dice")
SUMMARY_COLUMNS = (*CELL_KEYS, "n_seeds", "n_images", "dice_mean", "dice_std", "ci_low", "ci_high",
                   "rep_means", "rep_sd", "rep_min", "rep_max")
UNSTABLE_COLUMNS = (*CELL_KEYS, "n_seeds", "rep_means", "spread", "zeroshot", "reason")
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
#: A cell is unstable when its replicates' means differ by more than this (``report.unstable_spread``).
UNSTABLE_SPREAD = 0.1
ZEROSHOT = "zeroshot"


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


def two_way_bootstrap_ci(matrix: np.ndarray, n_resamples: int = N_BOOT, seed: int = SEED) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``matrix`` (replicates × test images), resampling both.

    Each resample draws ``n`` image indices with replacement (shared by every replicate: the images
    are the same test set) and ``R`` replicate indices with replacement, and takes the mean over the
    drawn replicates of their mean over the drawn images (the pigeonhole bootstrap of a crossed
    design, Owen 2007).  The image draws come first from ``default_rng(seed)`` exactly as
    :func:`scipy.stats.bootstrap` draws them, so one replicate (or identical ones) gives SciPy's
    percentile interval.  NaN with fewer than two images; the value itself when nothing varies.
    """
    matrix = np.atleast_2d(np.asarray(matrix, dtype=float))
    n_reps, n = matrix.shape
    if n < 2:
        return np.nan, np.nan
    if np.ptp(matrix) == 0:
        return float(matrix[0, 0]), float(matrix[0, 0])
    rng = np.random.default_rng(seed)
    images = rng.integers(0, n, (n_resamples, n))
    chunk = max(1, 2 ** 22 // (n * n_reps))  # bound the (R, chunk, n) gather to ~32 MB
    rep_means = np.concatenate([matrix[:, images[k:k + chunk]].mean(axis=-1)
                                for k in range(0, n_resamples, chunk)], axis=1)  # (R, B)
    if n_reps == 1:
        theta = rep_means[0]
    else:
        reps = rng.integers(0, n_reps, (n_resamples, n_reps))
        theta = rep_means.T[np.arange(n_resamples)[:, None], reps].mean(axis=1)
    alpha = (1.0 - CONFIDENCE) / 2.0
    low, high = stats.quantile(theta, np.array([alpha, 1.0 - alpha]))
    return float(low), float(high)


def replicate_matrices(frame: pd.DataFrame, dataset: str, rows: list[str] | None = None
                       ) -> tuple[list[str], dict[str, np.ndarray]]:
    """``(image ids, {row: replicates × images Dice})`` of one dataset on the images every row has.

    ``frame`` is a checked per-image frame, or an :func:`image_means` frame (no ``replicate``
    column: one replicate per row).  ``rows`` fixes the order (absent rows are dropped).
    """
    sub = frame.loc[frame["dataset"] == dataset]
    if "row" not in sub.columns:
        sub = sub.assign(row=[row_label(m, k) for m, k in zip(sub["model"], sub["method"], strict=True)])
    if "replicate" not in sub.columns:
        sub = sub.assign(replicate=0)
    wide = sub.pivot_table(index="id", columns=["row", "replicate"], values="dice", aggfunc="first")
    present = list(dict.fromkeys(wide.columns.get_level_values(0)))
    rows = order_rows(sub) if rows is None else [r for r in rows if r in present]
    complete = wide.dropna(axis=0, how="any").sort_index()
    if len(complete) < len(wide):
        log.warning("%s: %d of %d test images are missing from some row; rows are compared on the %d "
                    "they share", dataset, len(wide) - len(complete), len(wide), len(complete))
    return list(complete.index), {r: complete[r].to_numpy(float).T for r in rows}


def cell_summary(per_image: pd.DataFrame, n_resamples: int = N_BOOT, seed: int = SEED) -> pd.DataFrame:
    """One row per cell: ``model, method, dataset, n_seeds, n_images, dice_mean, dice_std, ci_low, ci_high,
    rep_means, rep_sd, rep_min, rep_max``.

    ``dice_mean`` is the mean over replicates of each replicate's mean per-image Dice; ``dice_std``
    the (population) standard deviation over test images of the replicate-averaged per-image Dice;
    ``[ci_low, ci_high]`` the 95 % :func:`two_way_bootstrap_ci` of the mean (replicates and test images
    resampled, ``n_resamples`` resamples, seeded).  One image gives a NaN interval.  ``rep_means``
    lists each replicate's mean Dice (``"0.800;0.001"``, replicate order), ``rep_sd`` is their sample
    standard deviation (NaN with one replicate), ``rep_min`` / ``rep_max`` their extremes.
    """
    frame = check_per_image(per_image)
    records = []
    for cell, grp in frame.groupby(list(CELL_KEYS), sort=False):
        wide = grp.pivot(index="id", columns="replicate", values="dice").sort_index()
        matrix = wide.to_numpy(float).T  # replicates × images
        reps = matrix.mean(axis=1)
        low, high = two_way_bootstrap_ci(matrix, n_resamples, seed)
        records.append((*cell, len(reps), matrix.shape[1], float(reps.mean()), float(matrix.mean(axis=0).std()),
                        low, high, ";".join(f"{v:.3f}" for v in reps),
                        float(reps.std(ddof=1)) if len(reps) > 1 else np.nan, float(reps.min()), float(reps.max())))
    out = pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))
    return out.astype({"n_seeds": int, "n_images": int})


def unstable_cells(summary: pd.DataFrame, spread: float = UNSTABLE_SPREAD) -> pd.DataFrame:
    """The cells of a :func:`cell_summary` frame whose seed replicates disagree.

    A tuned cell is unstable when its replicates' means differ by more than ``spread`` (max − min),
    or when any replicate's mean is no better than the zero-shot row of its model on the dataset.
    Columns ``model, method, dataset, n_seeds, rep_means, spread, zeroshot, reason`` (``zeroshot``:
    that row's mean, NaN without one); one row per unstable cell, in ``summary``'s order.
    """
    zs = summary.loc[summary["method"] == ZEROSHOT].set_index(["model", "dataset"])["dice_mean"]
    records = []
    for _, r in summary.loc[summary["method"] != ZEROSHOT].iterrows():
        values = [float(v) for v in str(r["rep_means"]).split(";")] if r["rep_means"] else []
        width = float(r["rep_max"] - r["rep_min"])
        base = float(zs.get((r["model"], r["dataset"]), np.nan))
        reasons = []
        if width > spread:
            reasons.append(f"replicates differ by {width:.3f} > {spread:g}")
        low = [i for i, v in enumerate(values) if not np.isnan(base) and v <= base]
        if low:
            reasons.append("replicate " + ", ".join(map(str, low)) + f" no better than zero-shot ({base:.3f})")
        if reasons:
            records.append((r["model"], r["method"], r["dataset"], int(r["n_seeds"]), r["rep_means"], width,
                            base, "; ".join(reasons)))
    return pd.DataFrame.from_records(records, columns=list(UNSTABLE_COLUMNS))


def summary_as_best(summary: pd.DataFrame) -> pd.DataFrame:
    """A :func:`cell_summary` frame with the column names of the ``best.json`` frame.

    ``test_dice_mean`` / ``test_dice_std`` (plus ``ci_low``, ``ci_high``, ``n_seeds``, ``n_test`` and
    the replicate spread), so the Dice table, heat map and domain bars show the seed-averaged numbers.
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


def replicate_p(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> float:
    """Intersection-union p-value that row ``a`` differs from row ``b`` in every seed combination.

    ``a`` and ``b`` are replicates × images Dice on the same images.  For each pair (replicate of
    ``a``, replicate of ``b``) the one-sided :func:`wilcoxon_pair` p-values of ``a - b`` are taken; a
    one-sided p is the largest over the pairs (the claim must hold for every pair of seeds: a
    level-α test, Berger 1982), the two-sided p is ``min(1, 2 × min(p_less, p_greater))``.  With one
    replicate each this is the Wilcoxon test of the per-image differences.
    """
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    p = {}
    for side in ("less", "greater") if alternative == "two-sided" else (alternative,):
        p[side] = max(wilcoxon_pair(x - y, alternative=side) for x in a for y in b)
    if alternative != "two-sided":
        return p[alternative]
    if any(np.isnan(v) for v in p.values()):
        return np.nan
    return float(min(1.0, 2.0 * min(p.values())))


def _matrices_by_dataset(frame: pd.DataFrame, rows: list[str] | None):
    for dataset in sorted(frame["dataset"].unique()):
        ids, mats = replicate_matrices(frame, dataset, rows)
        yield dataset, len(ids), mats


def _paired_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return check_per_image(frame) if "replicate" in frame.columns else frame


def pairwise_tests(per_image: pd.DataFrame, rows: list[str] | None = None) -> pd.DataFrame:
    """Every pair of rows per dataset, image by image.

    ``per_image`` is a per-image frame (replicates kept: the p-value is :func:`replicate_p`'s over
    every pair of seeds) or an :func:`image_means` frame (one replicate per row).  For rows
    ``i < j`` in ``rows`` order (grid order: zero-shot first) the pair is ``row_a = rows[j]``,
    ``row_b = rows[i]``, compared on the ``n`` images every row of the dataset has: so each method
    appears as ``row_a`` against its model's zero-shot row.  ``median_diff`` is the median of the
    differences of the replicate-averaged Dice, ``p`` the two-sided :func:`replicate_p`, ``p_holm``
    Holm-adjusted over all pairs of the dataset, ``effect_size`` the :func:`rank_biserial` of the
    replicate-averaged differences (positive when ``row_a`` is better).
    """
    records = []
    for dataset, n, mats in _matrices_by_dataset(_paired_frame(per_image), rows):
        block = []
        cols = list(mats)
        for i, row_b in enumerate(cols):
            for row_a in cols[i + 1:]:
                diff = mats[row_a].mean(axis=0) - mats[row_b].mean(axis=0)
                block.append([dataset, row_a, row_b, n, float(np.median(diff)) if n else np.nan,
                              replicate_p(mats[row_a], mats[row_b]), np.nan, rank_biserial(diff)])
        if block:
            for b, q in zip(block, holm([b[5] for b in block]), strict=True):
                b[6] = q
        records += block
    out = pd.DataFrame.from_records(records, columns=list(PAIRWISE_COLUMNS))
    return out.astype({"n": int, "median_diff": float, "p": float, "p_holm": float, "effect_size": float})


def versus_best(per_image: pd.DataFrame, rows: list[str] | None = None, alpha: float = ALPHA) -> pd.DataFrame:
    """Every row of each dataset against that dataset's best row: is it significantly worse?

    The best row has the highest mean Dice over the images all rows of the dataset share (the first
    in ``rows`` order on a tie).  Every other row gets the one-sided p-value of "row worse than the
    best" (:func:`replicate_p`, alternative ``less``: worse for every pair of seeds when
    ``per_image`` keeps its replicates; the plain Wilcoxon test on an :func:`image_means` frame),
    Holm-adjusted over the dataset's other rows; ``not_worse`` is ``p_holm >= alpha`` (True for the
    best row itself, whose ``p`` / ``p_holm`` are NaN).  Columns ``dataset, row, best_row, n, p,
    p_holm, not_worse``.
    """
    records = []
    for dataset, n, mats in _matrices_by_dataset(_paired_frame(per_image), rows):
        if not mats:
            continue
        scores = {r: m.mean() if m.size else np.nan for r, m in mats.items()}
        best = max(scores, key=lambda r: (scores[r], -list(mats).index(r)))
        others = [r for r in mats if r != best]
        p = [replicate_p(mats[r], mats[best], alternative="less") for r in others]
        p_holm = holm(p)
        records.append((dataset, best, best, n, np.nan, np.nan, True))
        records += [(dataset, r, best, n, pi, qi, bool(not qi < alpha))
                    for r, pi, qi in zip(others, p, p_holm, strict=True)]
    out = pd.DataFrame.from_records(records, columns=list(VS_BEST_COLUMNS))
    return out.astype({"n": int, "p": float, "p_holm": float, "not_worse": bool})
