"""Dice table (test Dice mean ± std per cell) as a DataFrame and as csv / markdown / LaTeX."""

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

__all__ = ["MISSING", "dice_numeric", "dice_table", "write_dice_tables"]

MISSING = "—"
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
    datasets = list(datasets) if datasets is not None else order_datasets(best)
    rows = list(rows) if rows is not None else order_rows(best)
    labelled = with_row_labels(best) if not best.empty else best.assign(row=[])

    def pivot(value: str) -> pd.DataFrame:
        if labelled.empty:
            table = pd.DataFrame(index=pd.Index([], dtype=object), dtype=float)
        else:
            table = labelled.pivot_table(index="row", columns="dataset", values=value,
                                         aggfunc="first", dropna=False)
        table = table.reindex(index=rows, columns=datasets).astype(float)
        table.index.name, table.columns.name = "row", None
        return table

    means, stds = pivot("test_dice_mean"), pivot("test_dice_std")
    means[MEAN_COL] = means[datasets].mean(axis=1, skipna=True) if datasets else float("nan")
    return means, stds


def _fmt(value: float) -> str:
    return f"{value:.{DECIMALS}f}"


def _cell_text(mean: float, std: float) -> str:
    if math.isnan(mean):
        return MISSING
    return _fmt(mean) if math.isnan(std) else f"{_fmt(mean)} ± {_fmt(std)}"


def dice_table(best: pd.DataFrame, datasets: list[str] | None = None,
               rows: list[str] | None = None) -> pd.DataFrame:
    """Formatted Dice table: index ``model · method``, one column per dataset plus ``mean``.

    Cells read ``"0.690 ± 0.210"`` (test Dice mean ± std, 3 decimals; just the mean when the
    std is null), ``"—"`` when the cell is absent or has no completed trial.  The ``mean``
    column is the mean of the row's dataset means over present cells.  See :func:`dice_numeric`
    for ``datasets`` / ``rows``.
    """
    means, stds = dice_numeric(best, datasets, rows)
    table = pd.DataFrame(index=means.index, dtype=object)
    for col in means.columns:
        std = stds[col] if col in stds.columns else pd.Series(float("nan"), index=means.index)
        table[col] = [_cell_text(m, s) for m, s in zip(means[col], std, strict=True)]
    return table


def _best_mask(means: pd.DataFrame) -> pd.DataFrame:
    """True where a cell equals its column's maximum as shown (rounded like the text)."""
    rounded = means.map(lambda v: v if math.isnan(v) else float(_fmt(v)))
    return rounded.eq(rounded.max(axis=0, skipna=True), axis=1) & rounded.notna()


def _numeric_csv(means: pd.DataFrame, stds: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=means.index)
    labels = [str(r).split(" · ", 1) for r in means.index]
    out["model"] = [p[0] for p in labels]
    out["method"] = [p[1] if len(p) > 1 else "" for p in labels]
    for col in stds.columns:
        out[f"{col}_mean"] = means[col]
        out[f"{col}_std"] = stds[col]
    out[MEAN_COL] = means[MEAN_COL]
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
    return text.replace(" · ", r" $\cdot$ ").replace(" ± ", r" $\pm$ ").replace(MISSING, "--")


def _latex(table: pd.DataFrame, bold: pd.DataFrame) -> str:
    lines = [r"% requires \usepackage{booktabs}",
             r"\begin{tabular}{l" + "c" * len(table.columns) + "}", r"\toprule",
             " & ".join(_tex_escape(h) for h in ["model · method", *map(str, table.columns)])
             + r" \\", r"\midrule"]
    for row in table.index:
        cells = [_tex_escape(str(v)) for v in table.loc[row]]
        cells = [rf"\textbf{{{v}}}" if bold.at[row, c] else v
                 for c, v in zip(table.columns, cells, strict=True)]
        lines.append(" & ".join([_tex_escape(str(row)), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_dice_tables(best: pd.DataFrame, out_prefix: Path, datasets: list[str] | None = None,
                      rows: list[str] | None = None) -> list[Path]:
    """Write the Dice table as ``<out_prefix>.csv``, ``.md`` and ``.tex``; return the three paths.

    * csv: numeric; index ``row`` (``model · method``), columns ``model, method``,
      ``<dataset>_mean, <dataset>_std`` per dataset and ``mean``; empty fields for absent cells.
    * md: the :func:`dice_table` text; the best mean of each column (datasets and ``mean``,
      ties at 3 decimals included) in ``**bold**``.
    * tex: a booktabs ``tabular`` with the best per column in ``\\textbf{}``.

    Every file is written atomically (temp file + ``os.replace``).
    """
    out_prefix = Path(out_prefix)
    means, stds = dice_numeric(best, datasets, rows)
    table = dice_table(best, datasets, rows)
    bold = _best_mask(means)
    csv_path, md_path, tex_path = (out_prefix.with_name(out_prefix.name + s)
                                   for s in (".csv", ".md", ".tex"))
    write_text_atomic(csv_path, _numeric_csv(means, stds).to_csv())
    write_text_atomic(md_path, _markdown(table, bold))
    write_text_atomic(tex_path, _latex(table, bold))
    return [csv_path, md_path, tex_path]
