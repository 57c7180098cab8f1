"""Figures: Dice heat map over the grid and test Dice vs prompt depth.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, Agg canvas),
so they work headless and leak no open figures.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

from tunevlseg.cells import ROW_SEP
from tunevlseg.methods import METHODS
from tunevlseg.report.collect import BASELINES, atomic_path, order_datasets, order_rows, with_row_labels
from tunevlseg.report.stats import CONFIDENCE, MIN_POOLED_STRATUM, MIN_RHO_TRIALS, SEED, too_small
from tunevlseg.report.tables import UNSTABLE_MARK, dice_numeric, unstable_mask

__all__ = ["POOLED", "colours", "depth_correlations", "new_figure", "placeholder", "plot_depth_vs_dice", "plot_dice_heatmap", "row_palette",
           "save_figure"]

NO_TRIALS = "no completed trials"
CORR_COLUMNS = ("dataset", "model", "method", "n", "rho", "p", "ci_low", "ci_high")
#: ``dataset`` of the correlations pooled over a method's datasets.
POOLED = "pooled"
#: Bootstrap of the depth correlations: resamples; fewest trials for ρ and its interval (one place: stats).
N_CORR_BOOT = 2000
MIN_CI_TRIALS = MIN_RHO_TRIALS
PANEL_COLS = 3
JITTER = 0.12
MARKERS = ("o", "s", "^", "D", "v")  # one per model, on top of the colour per model · method


# --------------------------------------------------------------------------- helpers


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_png: Path, dpi: int) -> Path:
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return out_png


def placeholder(out_png: Path, dpi: int, title: str, message: str = NO_TRIALS) -> Path:
    """Save a small figure that only says ``message``."""
    fig = new_figure(5.0, 3.0)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, transform=ax.transAxes)
    ax.set_axis_off()
    return save_figure(fig, out_png, dpi)


# --------------------------------------------------------------------------- heat map


def plot_dice_heatmap(best: pd.DataFrame, out_png: Path, dpi: int = 150, datasets: list[str] | None = None,
                      rows: list[str] | None = None, unstable: pd.DataFrame | None = None) -> Path:
    """Heat map of test Dice (mean) with rows ``model · method`` and one column per dataset.

    Cells are annotated with the mean Dice (2 decimals) on a fixed 0..1 colour scale; absent
    cells (or cells without a completed trial) are left blank on a grey background.  With no
    Dice value at all, the PNG only says "no completed trials".  ``datasets`` / ``rows`` fix the
    grid (see :func:`tunevlseg.report.tables.dice_numeric`), so a partial report keeps unfinished
    rows and columns.  Cells in ``unstable`` (an ``unstable_cells`` frame) read ``0.40†``, with a note
    under the map.  Written atomically; returns ``out_png``.
    """
    title = "Test Dice per cell (mean over test cases)"
    means, _ = dice_numeric(best, datasets, rows)
    means = means.drop(columns="mean")
    if means.empty or means.isna().all().all():
        return placeholder(out_png, dpi, title)
    n_rows, n_cols = means.shape
    flags = unstable_mask(unstable, list(means.columns), list(means.index))
    annot = np.array([[("" if np.isnan(v) else f"{v:.2f}" + (UNSTABLE_MARK if flag else ""))
                       for v, flag in zip(means.loc[r], flags.loc[r], strict=True)] for r in means.index])
    fig = new_figure(3.0 + 1.1 * n_cols, 1.5 + 0.42 * n_rows + (0.3 if flags.any().any() else 0.0))
    ax = fig.add_subplot()
    ax.set_facecolor("#d9d9d9")
    if flags.any().any():
        fig.text(0.01, 0.005, f"{UNSTABLE_MARK} seed replicates disagree (unstable.csv)", fontsize=8, va="bottom")
    sns.heatmap(means, ax=ax, vmin=0.0, vmax=1.0, cmap="viridis", annot=annot, fmt="",
                mask=means.isna(), linewidths=0.5, linecolor="white",
                cbar_kws={"label": "test Dice"}, annot_kws={"fontsize": 9})
    ax.set_title(title)
    ax.set_xlabel("dataset")
    ax.set_ylabel("model · method")
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.tick_params(axis="y", labelrotation=0)
    return save_figure(fig, out_png, dpi)


# --------------------------------------------------------------------------- depth vs Dice


def _tuned_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE trials of prompt-tuning methods with a positive depth and a test Dice."""
    if trials.empty:
        return trials
    keep = ((trials["state"] == "COMPLETE") & ~trials["method"].isin(BASELINES)
            & (trials["depth"] > 0) & trials["test_dice_mean"].notna())
    return trials.loc[keep]


def _spearman(depth: pd.Series, dice: pd.Series) -> tuple[float, float]:
    """Spearman (rho, p), NaN with fewer than ``MIN_RHO_TRIALS`` points or when either variable is constant."""
    if len(depth) < MIN_RHO_TRIALS or depth.nunique() < 2 or dice.nunique() < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.spearmanr(depth.to_numpy(float), dice.to_numpy(float))
    return float(result.statistic), float(result.pvalue)


def _z_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis (ties averaged), centred and scaled to unit variance; 0 if constant."""
    ranks = stats.rankdata(values, axis=-1)
    ranks = ranks - ranks.mean(axis=-1, keepdims=True)
    sd = ranks.std(axis=-1, keepdims=True)
    return np.divide(ranks, sd, out=np.zeros_like(ranks), where=sd > 0)


def _pooled_rank_corr(strata: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Pearson correlation (along the last axis) of the within-stratum standardised ranks of x and y.

    One stratum: Spearman's rho.  Several: the trial-weighted mean of the strata's rho (a stratum
    whose x or y is constant contributes nothing); NaN when nothing varies.
    """
    x = np.concatenate([_z_ranks(a) for a, _ in strata], axis=-1)
    y = np.concatenate([_z_ranks(b) for _, b in strata], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN
        return stats.pearsonr(x, y, axis=-1).statistic


def _rank_corr_ci(strata: list[tuple[np.ndarray, np.ndarray]], seed: int = SEED) -> tuple[float, float]:
    """95 % percentile bootstrap interval of :func:`_pooled_rank_corr`, resampling trials within
    each stratum (:func:`scipy.stats.bootstrap` resamples each index sample on its own).  Resamples
    in which nothing varies have no rho and are left out.  NaN with fewer than ``MIN_CI_TRIALS``."""
    if sum(len(a) for a, _ in strata) < MIN_CI_TRIALS:
        return math.nan, math.nan

    def statistic(*index, axis=-1):
        picked = [(a[i.astype(int)], b[i.astype(int)]) for (a, b), i in zip(strata, index, strict=True)]
        return _pooled_rank_corr(picked)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(tuple(np.arange(len(a), dtype=float) for a, _ in strata), statistic,
                              n_resamples=N_CORR_BOOT, vectorized=True, method="percentile",
                              rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution
    if np.isnan(dist).all():
        return math.nan, math.nan
    low, high = np.nanpercentile(dist, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return float(low), float(high)


def _varying(grp: pd.DataFrame) -> bool:
    """A dataset's trials that can enter the pooled ρ: enough of them, and depth and Dice both vary."""
    return len(grp) >= MIN_POOLED_STRATUM and grp["depth"].nunique() > 1 and grp["test_dice_mean"].nunique() > 1


def _pooled_row(model: str, method: str, groups: list[pd.DataFrame]) -> tuple:
    strata = [(g["depth"].to_numpy(float), g["test_dice_mean"].to_numpy(float)) for g in groups if _varying(g)]
    n = sum(len(a) for a, _ in strata)
    if n < MIN_RHO_TRIALS:
        return (POOLED, model, method, n, math.nan, math.nan, math.nan, math.nan)
    x = np.concatenate([_z_ranks(a) for a, _ in strata])
    y = np.concatenate([_z_ranks(b) for _, b in strata])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.pearsonr(x, y)
    return (POOLED, model, method, n, float(result.statistic), float(result.pvalue), *_rank_corr_ci(strata))


def depth_correlations(trials: pd.DataFrame, datasets: list[str] | None = None) -> pd.DataFrame:
    """Spearman correlation of prompt depth vs test Dice per (dataset, model, method), and pooled.

    Uses the COMPLETE trials of prompt-tuning methods (baselines ``zeroshot`` / ``finetune``
    and depth <= 0 excluded).  Columns ``dataset, model, method, n, rho, p, ci_low, ci_high``;
    ``rho`` and ``p`` (:func:`scipy.stats.spearmanr`) are NaN when ``n < MIN_RHO_TRIALS`` or depth (or
    Dice) is constant; ``[ci_low, ci_high]`` is a 95 % percentile bootstrap interval over the trials
    (NaN with fewer than ``MIN_CI_TRIALS`` trials).  Lines with ``dataset == POOLED`` pool each
    (model, method) over its datasets: rho is the Pearson correlation of depth and Dice ranks
    taken within each dataset and standardised there (the trial-weighted mean of the per-dataset
    Spearman rho; datasets with fewer than ``MIN_POOLED_STRATUM`` trials or where depth or Dice never
    varied are left out, ``n`` counts the rest; NaN when ``n < MIN_RHO_TRIALS``),
    p is Pearson's, the interval resamples trials within each dataset.  These are the numbers of
    :func:`plot_depth_vs_dice`.  With ``datasets`` (the config's order) the lines follow it.  TPE's trials are not independent samples (later trials follow
    the earlier), so the p-values and intervals are descriptive.
    """
    tuned = _tuned_trials(trials)
    rows, pooled = [], []
    if not tuned.empty:
        for (dataset, model, method), grp in tuned.groupby(["dataset", "model", "method"]):
            rho, p = _spearman(grp["depth"], grp["test_dice_mean"])
            strata = [(grp["depth"].to_numpy(float), grp["test_dice_mean"].to_numpy(float))]
            ci = _rank_corr_ci(strata) if not math.isnan(rho) else (math.nan, math.nan)
            rows.append((dataset, model, method, len(grp), rho, p, *ci))
        for (model, method), grp in tuned.groupby(["model", "method"]):
            pooled.append(_pooled_row(model, method, [g for _, g in grp.groupby("dataset")]))
    frame = pd.DataFrame(rows + pooled, columns=list(CORR_COLUMNS))
    if datasets is not None and not frame.empty:  # per-dataset lines in the config's order, pooled last
        place = {d: i for i, d in enumerate(order_datasets(frame.loc[frame["dataset"] != POOLED], datasets))}
        frame = frame.sort_values("dataset", key=lambda col: col.map(place).fillna(len(place)), kind="stable")
        frame = frame.reset_index(drop=True)
    return frame.astype({"n": int, "rho": float, "p": float, "ci_low": float, "ci_high": float})


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _legend_label(label: str, rho: float, p: float, low: float = math.nan, high: float = math.nan,
                  n: int | None = None) -> str:
    if math.isnan(rho):
        if n is not None and n < MIN_RHO_TRIALS:
            return f"{label} (ρ: {too_small(n, MIN_RHO_TRIALS)})"
        return f"{label} (ρ undefined: depth or Dice constant)"
    ci = "" if math.isnan(low) else f" [{low:.2f}, {high:.2f}]"
    return f"{label} (ρ={rho:.2f}{ci}, p={_p_text(p)})"


def _zero_shot_lines(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean zero-shot test Dice per (dataset, model) from COMPLETE zeroshot rows."""
    if trials.empty:
        return pd.DataFrame(columns=["dataset", "model", "test_dice_mean"])
    zs = trials.loc[(trials["method"] == "zeroshot") & (trials["state"] == "COMPLETE")
                    & trials["test_dice_mean"].notna()]
    return zs.groupby(["dataset", "model"], as_index=False)["test_dice_mean"].mean()


def _draw_panel(ax, data: pd.DataFrame, zero_shot: pd.DataFrame, corr: pd.DataFrame,
                palette: dict[str, tuple], markers: dict[str, str],
                rng: np.random.Generator) -> None:
    """Jittered points, per-depth mean lines and zero-shot lines for one dataset."""
    handles, labels = [], []
    for label in [r for r in palette if r in set(data["row"])]:
        grp = data.loc[data["row"] == label]
        marker = markers[grp["model"].iat[0]]
        x = grp["depth"].to_numpy(float) + rng.uniform(-JITTER, JITTER, len(grp))
        ax.scatter(x, grp["test_dice_mean"], s=18, alpha=0.55, color=palette[label],
                   marker=marker, edgecolor="none")
        per_depth = grp.groupby("depth")["test_dice_mean"].mean()
        (line,) = ax.plot(per_depth.index, per_depth.to_numpy(), marker=marker, ms=5, lw=1.8,
                          color=palette[label])
        c = corr.loc[(corr["model"] == grp["model"].iat[0])
                     & (corr["method"] == grp["method"].iat[0])].iloc[0]
        handles.append(line)
        labels.append(_legend_label(label, c["rho"], c["p"], c["ci_low"], c["ci_high"], int(c["n"])))
    styles = ["--", ":", "-."]
    for i, zs in enumerate(zero_shot.itertuples(index=False)):
        name = "zero-shot" if len(zero_shot) == 1 else f"zero-shot · {zs.model}"
        line = ax.axhline(zs.test_dice_mean, color="0.25", lw=1.3, ls=styles[i % len(styles)])
        handles.append(line)
        labels.append(f"{name} ({zs.test_dice_mean:.2f})")
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8,
              frameon=False, ncols=1)


def _draw_forest(ax, corr: pd.DataFrame, palette: dict[str, tuple], datasets: list[str]) -> None:
    """Spearman rho with its bootstrap CI per row: each dataset a grey bar, the pooled value a diamond;
    a row without a pooled rho says why (:func:`too_small`)."""
    rows = list(palette)
    every = with_row_labels(corr) if not corr.empty else corr.assign(row=[])
    labelled = every.dropna(subset=["rho"])
    step = 0.5 / max(len(datasets), 1)
    for y, row in enumerate(rows):
        sel = labelled.loc[labelled["row"] == row] if not labelled.empty else labelled
        for j, dataset in enumerate(datasets):
            c = sel.loc[sel["dataset"] == dataset]
            if not c.empty:
                c = c.iloc[0]
                yy = y + 0.3 - step * (j + 0.5)
                ax.plot([c["ci_low"], c["ci_high"]], [yy, yy], color="0.6", lw=1.0)
                ax.plot(c["rho"], yy, "o", color="0.45", ms=3)
        pooled = sel.loc[sel["dataset"] == POOLED]
        if not pooled.empty:
            c = pooled.iloc[0]
            ax.plot([c["ci_low"], c["ci_high"]], [y - 0.3, y - 0.3], color=palette[row], lw=2.2)
            ax.plot(c["rho"], y - 0.3, "D", color=palette[row], ms=6)
        else:
            ax.text(0.0, y, _pooled_note(every.loc[every["row"] == row]), ha="center", va="center", fontsize=7,
                    color=palette[row], bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})
    ax.axvline(0.0, color="0.3", lw=0.8, ls=":")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # first row on top, every note inside the axes
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Spearman ρ (depth, test Dice), 95 % bootstrap CI")
    ax.set_title("ρ per dataset (grey) and pooled (◆)")
    ax.grid(axis="x", alpha=0.3)


def _pooled_note(corr: pd.DataFrame) -> str:
    """Why a row has no pooled ρ: too few trials per dataset (each needs ``MIN_POOLED_STRATUM``), too few in
    all, or nothing varied."""
    per_dataset = corr.loc[corr["dataset"] != POOLED, "n"]
    pooled = corr.loc[corr["dataset"] == POOLED, "n"]
    n = int(pooled.iat[0]) if len(pooled) else 0
    most = int(per_dataset.max()) if len(per_dataset) else 0
    if most < MIN_POOLED_STRATUM:
        return f"pooled ρ: {too_small(most, MIN_POOLED_STRATUM, 'trials per dataset')}"
    if n < MIN_RHO_TRIALS:
        return f"pooled ρ: {too_small(n, MIN_RHO_TRIALS)}"
    return "pooled ρ undefined: depth or Dice constant"


#: tab20 hue pairs (dark, light) in method catalogue order; grey (7) last, for an 11th method or more.
_HUES = (0, 1, 2, 3, 4, 5, 6, 8, 9, 7)


def row_palette(rows: list[str], models: list[str] | None = None) -> dict[str, tuple]:
    """The colour of each ``model · method`` row, the same whatever subset of rows a figure shows: the hue is
    the method's place in the method catalogue, the shade its model's place in ``models`` (the config's
    ``benchmark.models``; default: the models of ``rows``, sorted) — tab20: dark for the first model, light
    for the second; with more methods or models, evenly spaced hues over every (model, catalogue method).
    Rows outside the catalogue or ``models`` come after.  Every figure takes its colours from here
    (:func:`colours`); the report passes the grid's palette to all of them."""
    models = list(dict.fromkeys(models or sorted({r.split(ROW_SEP)[0] for r in rows})))
    methods = list(METHODS)
    canonical = [f"{m}{ROW_SEP}{k}" for m in models for k in methods]
    extra = [r for r in dict.fromkeys(rows) if r not in set(canonical)]
    if len(methods) <= len(_HUES) and len(models) <= 2 and not extra:
        tab20 = sns.color_palette("tab20", 20)
        colour = {f"{m}{ROW_SEP}{k}": tab20[2 * _HUES[j] + i] for i, m in enumerate(models)
                  for j, k in enumerate(methods)}
    else:
        colour = dict(zip(canonical + extra, sns.color_palette("husl", len(canonical) + len(extra)), strict=True))
    return {r: colour[r] for r in rows}


def colours(rows: list[str], palette: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """The colours of ``rows`` (in that order) from ``palette`` (the report's :func:`row_palette` of the whole
    grid), or from :func:`row_palette` of ``rows`` alone when it lacks one."""
    if palette is not None and all(r in palette for r in rows):
        return {r: palette[r] for r in rows}
    return row_palette(list(rows))


def plot_depth_vs_dice(trials: pd.DataFrame, out_png: Path, dpi: int = 150,
                       corr: pd.DataFrame | None = None, datasets: list[str] | None = None,
                       palette: dict[str, tuple] | None = None) -> Path:
    """Test Dice vs prompt depth over all COMPLETE trials of prompt-tuning methods.

    One panel per dataset (y axis 0..1); one colour per ``model · method`` (same in every
    panel) with jittered trial points and a line through the per-depth means; each dataset's
    zero-shot Dice (when present) is a dashed horizontal line labelled "zero-shot".  Legend
    entries carry the Spearman rho, its bootstrap CI and p over (depth, test Dice) of that method
    in that panel (see :func:`depth_correlations`), or why there is none: "n too small (n = 2, needs ≥ 5)"
    (:data:`MIN_RHO_TRIALS`) or a constant depth or Dice. Panels follow ``datasets`` (the config's order,
    :func:`order_datasets`); colours come from ``palette`` (:func:`colours`).  A last panel shows every rho with its CI: per dataset in grey, pooled over
    the datasets in the row's colour.
    No complete tuned trial gives a PNG that says "no completed trials".  ``corr`` is
    :func:`depth_correlations` of ``trials`` when the caller has it already.  Written atomically;
    returns ``out_png``.
    """
    title = "Test Dice vs prompt depth (completed trials)"
    tuned = _tuned_trials(trials)
    if tuned.empty:
        return placeholder(out_png, dpi, title)
    tuned = with_row_labels(tuned)
    corr = depth_correlations(trials) if corr is None else corr
    zero_shot = _zero_shot_lines(trials)
    datasets = order_datasets(tuned, datasets)
    palette = colours(order_rows(tuned), palette)
    models = sorted(tuned["model"].unique())
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    n_panels = len(datasets) + 1  # the last one: rho with its interval per dataset and pooled
    n_cols = min(PANEL_COLS, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    legend_h = 0.22 * (len(palette) + zero_shot["model"].nunique()) + 0.4
    fig = new_figure(4.6 * n_cols, (3.4 + legend_h) * n_rows)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()  # every Dice panel has y 0..1
    rng = np.random.default_rng(0)
    for i, (ax, dataset) in enumerate(zip(axes, datasets, strict=False)):
        _draw_panel(ax, tuned.loc[tuned["dataset"] == dataset],
                    zero_shot.loc[zero_shot["dataset"] == dataset],
                    corr.loc[corr["dataset"] == dataset], palette, markers, rng)
        ax.set_title(dataset)
        ax.set_xlabel("prompt depth")
        ax.set_ylabel("test Dice" if i % n_cols == 0 else "")
        ax.set_ylim(0.0, 1.0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", alpha=0.3)
    _draw_forest(axes[len(datasets)], corr, palette, datasets)
    for ax in axes[len(datasets) + 1:]:
        ax.set_axis_off()
    fig.suptitle(title)
    return save_figure(fig, out_png, dpi)
