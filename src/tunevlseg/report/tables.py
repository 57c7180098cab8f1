"""Dice table as a DataFrame and as csv / markdown / LaTeX.

A cell reads ``mean ± std`` (the best trial's ``best.json``) or, when the cells' numbers come from
the per-image results of their retrained seeds (:func:`tunevlseg.report.stats.summary_as_best`:
columns ``ci_low``, ``ci_high``, ``n_seeds``), ``mean [low, high]`` with the 95 % bootstrap CI.
Cells whose seed replicates disagree (:func:`tunevlseg.report.stats.unstable_cells`) carry
:data:`UNSTABLE_MARK` and a footnote.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tunevlseg.report.collect import (
    order_datasets,
    order_rows,
    with_row_labels,
    write_text_atomic,
)

__all__ = ["MISSING", "UNSTABLE_MARK", "UNSTABLE_NOTE", "dice_intervals", "dice_numeric", "dice_table",
           "has_intervals", "unstable_mask", "write_dice_tables"]

MISSING = "—"
UNSTABLE_MARK = "†"
UNSTABLE_NOTE = (f"{UNSTABLE_MARK} unstable: the cell's seed replicates disagree (spread above the threshold, or a "
                 "replicate no better than zero-shot); see unstable.csv")
SPREAD_COLUMNS = ("rep_means", "rep_sd", "rep_min", "rep_max")
MEAN_COL = "mean"
DECIMALS = 3


def dice_numeric(best: pd.DataFrame, datasets: list[str] | None = None,
                 rows: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(means, stds)``: frames indexed by ``model · method``, one column per dataset.

    ``means`` also has a ``mean`` column: the mean of the row's dataset means over the cells
    that are present.  Absent cells (or cells without a completed trial) are NaN.  ``datasets``
    and ``rows`` fix the column / row order (and may name absent ones); by default all present
    datasets (sorted) and all rows (by model, then canonical method order).
    """
    datasets, rows = _grid(best, datasets, rows)
    means, stds = _pivot(best, "test_dice_mean", datasets, rows), _pivot(best, "test_dice_std", datasets, rows)
    means[MEAN_COL] = means[datasets].mean(axis=1, skipna=True) if datasets else float("nan")
    return means, stds


def _grid(best: pd.DataFrame, datasets: list[str] | None, rows: list[str] | None) -> tuple[list, list]:
    return (list(datasets) if datasets is not None else order_datasets(best),
            list(rows) if rows is not None else order_rows(best))


def _pivot(best: pd.DataFrame, value: str, datasets: list[str], rows: list[str]) -> pd.DataFrame:
    """Frame ``row × dataset`` of column ``value`` of ``best`` (NaN where absent)."""
    if best.empty or value not in best.columns:
        table = pd.DataFrame(index=pd.Index([], dtype=object), dtype=float)
    else:
        table = with_row_labels(best).pivot_table(index="row", columns="dataset", values=value,
                                                  aggfunc="first", dropna=False)
    table = table.reindex(index=rows, columns=datasets).astype(float)
    table.index.name, table.columns.name = "row", None
    return table


def has_intervals(best: pd.DataFrame) -> bool:
    """True when ``best`` carries bootstrap intervals (``ci_low`` / ``ci_high`` columns)."""
    return {"ci_low", "ci_high"} <= set(best.columns)


def unstable_mask(unstable: pd.DataFrame | None, datasets: list[str], rows: list[str]) -> pd.DataFrame:
    """Frame ``row × dataset``: True where the cell is in ``unstable`` (an ``unstable_cells`` frame)."""
    mask = pd.DataFrame(False, index=pd.Index(rows, name="row"), columns=list(datasets))
    if unstable is not None:
        for _, r in with_row_labels(unstable).iterrows():
            if r["row"] in mask.index and r["dataset"] in mask.columns:
                mask.at[r["row"], r["dataset"]] = True
    return mask


def dice_intervals(best: pd.DataFrame, datasets: list[str] | None = None,
                   rows: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(low, high)`` frames like :func:`dice_numeric`'s (no ``mean`` column); NaN without intervals."""
    datasets, rows = _grid(best, datasets, rows)
    return _pivot(best, "ci_low", datasets, rows), _pivot(best, "ci_high", datasets, rows)


def _fmt(value: float) -> str:
    return f"{value:.{DECIMALS}f}"


def _cell_text(mean: float, std: float) -> str:
    if math.isnan(mean):
        return MISSING
    return _fmt(mean) if math.isnan(std) else f"{_fmt(mean)} ± {_fmt(std)}"


def _interval_text(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return MISSING
    return _fmt(mean) if math.isnan(low) else f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]"


def dice_table(best: pd.DataFrame, datasets: list[str] | None = None,
               rows: list[str] | None = None) -> pd.DataFrame:
    """Formatted Dice table: index ``model · method``, one column per dataset plus ``mean``.

    Cells read ``"0.690 ± 0.210"`` (test Dice mean ± std, 3 decimals; just the mean when the
    std is null) or, when ``best`` has intervals (:func:`has_intervals`), ``"0.690 [0.650, 0.730]"``
    (mean and 95 % CI); ``"—"`` when the cell is absent or has no completed trial; followed by
    ``" (2/3 seeds)"`` when ``best`` has ``n_seeds`` below ``n_seeds_expected`` (a replicate failed or
    has not run).  The ``mean``
    column is the mean of the row's dataset means over present cells.  See :func:`dice_numeric`
    for ``datasets`` / ``rows``.
    """
    means, stds = dice_numeric(best, datasets, rows)
    low, high = dice_intervals(best, datasets, rows)
    marks = _seed_marks(best, list(stds.columns), list(means.index))
    nan = pd.Series(float("nan"), index=means.index)
    table = pd.DataFrame(index=means.index, dtype=object)
    for col in means.columns:
        if has_intervals(best):
            lo, hi = low.get(col, nan), high.get(col, nan)
            table[col] = [_interval_text(m, a, b) for m, a, b in zip(means[col], lo, hi, strict=True)]
        else:
            table[col] = [_cell_text(m, s) for m, s in zip(means[col], stds.get(col, nan), strict=True)]
        if col in marks.columns:
            table[col] = [t if t == MISSING else t + m for t, m in zip(table[col], marks[col], strict=True)]
    return table


def _seed_marks(best: pd.DataFrame, datasets: list[str], rows: list[str]) -> pd.DataFrame:
    """``" (2/3 seeds)"`` where a cell has fewer seed replicates with results than expected (``best``'s
    ``n_seeds`` < ``n_seeds_expected``), ``""`` elsewhere; no columns when ``best`` lacks the counts."""
    if not {"n_seeds", "n_seeds_expected"} <= set(best.columns):
        return pd.DataFrame(index=rows)
    have, want = _pivot(best, "n_seeds", datasets, rows), _pivot(best, "n_seeds_expected", datasets, rows)
    return pd.DataFrame({col: [f" ({h:.0f}/{w:.0f} seeds)" if h < w else "" for h, w in
                               zip(have[col], want[col], strict=True)] for col in datasets}, index=rows)


def _best_mask(means: pd.DataFrame) -> pd.DataFrame:
    """True where a cell equals its column's maximum as shown (rounded like the text)."""
    rounded = means.map(lambda v: v if math.isnan(v) else float(_fmt(v)))
    return rounded.eq(rounded.max(axis=0, skipna=True), axis=1) & rounded.notna()


def _not_worse_mask(means: pd.DataFrame, not_worse: pd.DataFrame) -> pd.DataFrame:
    """Dataset columns from a :func:`tunevlseg.report.stats.versus_best` frame (True = not
    significantly worse than the column's best); the ``mean`` column stays the best as shown."""
    mask = _best_mask(means)
    marks = (not_worse.pivot_table(index="row", columns="dataset", values="not_worse", aggfunc="first")
             if not not_worse.empty else pd.DataFrame())
    for col in means.columns.drop(MEAN_COL):
        column = marks[col] if col in marks.columns else pd.Series(dtype=object)
        mask[col] = column.reindex(means.index).eq(True).to_numpy() & means[col].notna().to_numpy()
    return mask


def _numeric_csv(best: pd.DataFrame, means: pd.DataFrame, stds: pd.DataFrame,
                 not_worse: pd.DataFrame | None, unstable: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=means.index)
    labels = [str(r).split(" · ", 1) for r in means.index]
    out["model"] = [p[0] for p in labels]
    out["method"] = [p[1] if len(p) > 1 else "" for p in labels]
    low, high = dice_intervals(best, list(stds.columns), list(means.index))
    p_holm = None
    if not_worse is not None:
        p_holm = (not_worse.pivot_table(index="row", columns="dataset", values="p_holm", aggfunc="first",
                                        dropna=False) if not not_worse.empty else pd.DataFrame())
        p_holm = p_holm.reindex(index=means.index, columns=stds.columns).astype(float)
    for col in stds.columns:
        out[f"{col}_mean"] = means[col]
        out[f"{col}_std"] = stds[col]
        if has_intervals(best):
            out[f"{col}_ci_low"] = low[col]
            out[f"{col}_ci_high"] = high[col]
        if p_holm is not None:
            out[f"{col}_p_vs_best"] = p_holm[col]
        for name in (c for c in SPREAD_COLUMNS if c in best.columns):
            values = _pivot_any(best, name, [col], list(means.index))[col]
            out[f"{col}_{name}"] = values
        if "rep_means" in best.columns:
            out[f"{col}_unstable"] = unstable[col].astype(bool)  # False where the cell is absent: nothing to mark
    out[MEAN_COL] = means[MEAN_COL]
    if "n_seeds" in best.columns:
        seeds = _pivot(best, "n_seeds", list(stds.columns), list(means.index)).min(axis=1)
        out["n_seeds"] = seeds.astype("Int64")
    if "n_seeds_expected" in best.columns:
        expected = _pivot(best, "n_seeds_expected", list(stds.columns), list(means.index)).max(axis=1)
        out["n_seeds_expected"] = expected.astype("Int64")
    return out


def _pivot_any(best: pd.DataFrame, value: str, datasets: list[str], rows: list[str]) -> pd.DataFrame:
    """Like :func:`_pivot` for a column of any type (the replicate means are text)."""
    table = with_row_labels(best).pivot(index="row", columns="dataset", values=value)
    return table.reindex(index=rows, columns=datasets)


def _marked(table: pd.DataFrame, unstable: pd.DataFrame) -> pd.DataFrame:
    """``table`` with :data:`UNSTABLE_MARK` after every unstable cell's text."""
    out = table.copy()
    for col in unstable.columns:
        out[col] = [f"{v}{UNSTABLE_MARK}" if flag else v for v, flag in zip(out[col], unstable[col], strict=True)]
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(table: pd.DataFrame, bold: pd.DataFrame) -> str:
    header = ["model · method", *map(str, table.columns)]
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|:--" + "|--:" * len(table.columns) + "|"]
    for row in table.index:
        cells = [f"**{v}**" if bold.at[row, c] else v for c, v in table.loc[row].items()]
        lines.append("| " + " | ".join(_md_escape(str(x)) for x in [row, *cells]) + " |")
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}


def _tex_escape(text: str) -> str:
    text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)
    return (text.replace(" · ", r" $\cdot$ ").replace(" ± ", r" $\pm$ ").replace(MISSING, "--")
            .replace(UNSTABLE_MARK, r"$^\dagger$"))


def _latex(table: pd.DataFrame, bold: pd.DataFrame, note: str = "") -> str:
    lines = [r"% requires \usepackage{booktabs}",
             r"\begin{tabular}{l" + "c" * len(table.columns) + "}", r"\toprule",
             " & ".join(_tex_escape(h) for h in ["model · method", *map(str, table.columns)])
             + r" \\", r"\midrule"]
    for row in table.index:
        cells = [_tex_escape(str(v)) for v in table.loc[row]]
        cells = [rf"\textbf{{{v}}}" if bold.at[row, c] else v
                 for c, v in zip(table.columns, cells, strict=True)]
        lines.append(" & ".join([_tex_escape(str(row)), *cells]) + r" \\")
    lines.append(r"\bottomrule")
    if note:
        lines.append(rf"\multicolumn{{{len(table.columns) + 1}}}{{l}}{{\footnotesize {_tex_escape(note)}}} \\")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def unit_note(volume_datasets: list[str], tex: bool = False) -> str:
    """The caption line naming the datasets whose column is Dice per volume ("" when none); ``tex``: ASCII words."""
    if not volume_datasets:
        return ""
    formula = ("overlap and sizes summed over a case's test slices" if tex
               else "2·Σ|P∩G| / (Σ|P|+Σ|G|) over a case's test slices")
    return (f"Unit: Dice per volume ({formula}) for {', '.join(volume_datasets)}; per image for the other "
            f"datasets. Per-slice Dice: test_metrics.csv.")


_HTML_STYLE = ("body{font-family:sans-serif;font-size:13px;margin:8px}table{border-collapse:collapse}"
               "th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}"
               "th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #333}"
               "p{color:#444;font-size:12px}")


def _html(table: pd.DataFrame, bold: pd.DataFrame, note: str = "") -> str:
    """A self-contained HTML page of the table (what ``snakemake --report`` shows inline): bold as in md."""
    from html import escape

    head = "".join(f"<th>{escape(str(h))}</th>" for h in ["model · method", *table.columns])
    body = []
    for row in table.index:
        cells = [f"<td><b>{escape(str(v))}</b></td>" if bold.at[row, c] else f"<td>{escape(str(v))}</td>"
                 for c, v in table.loc[row].items()]
        body.append(f"<tr><th scope=\"row\">{escape(str(row))}</th>{''.join(cells)}</tr>")
    foot = f"<p>{escape(note.strip())}</p>" if note.strip() else ""
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Dice table</title>'
            f"<style>{_HTML_STYLE}</style></head><body>\n<table><thead><tr>{head}</tr></thead><tbody>\n"
            + "\n".join(body) + f"\n</tbody></table>{foot}\n</body></html>\n")


def write_dice_tables(best: pd.DataFrame, out_prefix: Path, datasets: list[str] | None = None,
                      rows: list[str] | None = None, not_worse: pd.DataFrame | None = None,
                      unstable: pd.DataFrame | None = None, volume_datasets: list[str] | None = None,
                      partial: dict[tuple[str, str], str] | None = None) -> list[Path]:
    """Write the Dice table as ``<out_prefix>.csv``, ``.md``, ``.tex`` and ``.html``; return the four paths.

    ``volume_datasets`` (3-D datasets scored per volume, see
    :func:`tunevlseg.report.collect.per_volume`) are named under the md and tex tables as the unit
    of their columns (:func:`unit_note`); every other column is per image.

    * csv: numeric; index ``row`` (``model · method``), columns ``model, method``,
      ``<dataset>_mean, <dataset>_std`` per dataset and ``mean``; empty fields for absent cells.
      When ``best`` has intervals (:func:`has_intervals`) also ``<dataset>_ci_low``,
      ``<dataset>_ci_high``; with ``not_worse`` ``<dataset>_p_vs_best`` (its ``p_holm``); when
      ``best`` has ``n_seeds`` a column ``n_seeds``: the fewest replicates of the row's cells, and with
      ``n_seeds_expected`` (:func:`tunevlseg.report.collect.replicate_counts`) a column of it.
      With the replicate spread of :func:`tunevlseg.report.stats.cell_summary` (``rep_means`` ...):
      ``<dataset>_rep_means`` (``;``-separated), ``_rep_sd``, ``_rep_min``, ``_rep_max`` and
      ``_unstable`` (the cell is in ``unstable``).
    * md: the :func:`dice_table` text; in ``**bold**`` per dataset column the rows that are not
      significantly worse than its best (``not_worse``, a
      :func:`tunevlseg.report.stats.versus_best` frame) or, without it, the best mean of the column
      (ties at 3 decimals included); in the ``mean`` column always the best mean as shown.
    * tex: a booktabs ``tabular`` with the same marks in ``\\textbf{}``.
    * html: the md table as a self-contained page (shown inline by ``snakemake --report``), marks in ``<b>``.

    Cells listed in ``unstable`` (a :func:`tunevlseg.report.stats.unstable_cells` frame) end in
    :data:`UNSTABLE_MARK` in md and tex, with :data:`UNSTABLE_NOTE` under the table.
    ``partial`` maps (row, dataset) of cells left out of ``best`` as incomplete to the text md and tex
    show instead of "—" (never bold; the csv leaves them empty).

    Every file is written atomically (temp file + ``os.replace``).
    """
    out_prefix = Path(out_prefix)
    means, stds = dice_numeric(best, datasets, rows)
    table = dice_table(best, datasets, rows)
    bold = _best_mask(means) if not_worse is None else _not_worse_mask(means, not_worse)
    for (row, dataset), text in (partial or {}).items():
        if row in table.index and dataset in table.columns:
            table.at[row, dataset], bold.at[row, dataset] = text, False
    flags = unstable_mask(unstable, list(stds.columns), list(means.index))
    marked = _marked(table, flags)
    notes = [UNSTABLE_NOTE] if flags.any().any() else []
    volumes = [d for d in (volume_datasets or []) if d in means.columns]
    tex_notes = notes + ([unit_note(volumes, tex=True)] if volumes else [])
    notes += [unit_note(volumes)] if volumes else []
    csv_path, md_path, tex_path, html_path = (out_prefix.with_name(out_prefix.name + s)
                                              for s in (".csv", ".md", ".tex", ".html"))
    write_text_atomic(csv_path, _numeric_csv(best, means, stds, not_worse, flags).to_csv())
    write_text_atomic(md_path, _markdown(marked, bold) + "".join(f"\n{n}\n" for n in notes))
    write_text_atomic(tex_path, _latex(marked, bold, " ".join(tex_notes)))
    write_text_atomic(html_path, _html(marked, bold, " ".join(notes)))
    return [csv_path, md_path, tex_path, html_path]
