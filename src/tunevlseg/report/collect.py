"""Read per-cell tuning results (``best.json`` and ``trials.csv``) into DataFrames.

A *cell* is one (model, method, dataset) combination of the benchmark grid.  Also holds
the small helpers shared by :mod:`.tables` and :mod:`.figures` (row labels, ordering,
atomic output paths).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from tunevlseg.cells import RESULT_METRICS, CellResult, row_label
from tunevlseg.data.atomic import atomic_write
from tunevlseg.methods import METHOD_ORDER, METHODS

__all__ = [
    "BASELINES",
    "BEST_COLUMNS",
    "CELL_KEYS",
    "METHOD_ORDER",
    "TRIAL_COLUMNS",
    "atomic_path",
    "load_best",
    "load_trials",
    "order_datasets",
    "order_rows",
    "row_label",
]

CELL_KEYS = ("model", "method", "dataset")
#: best.json keys read into the frame: the cell, the selected trial and its metrics.
BEST_COLUMNS = (*CELL_KEYS, "trial", *RESULT_METRICS)

TRIAL_REQUIRED = (*CELL_KEYS, "trial", "state", "depth", "test_dice_mean")
TRIAL_COLUMNS = (
    *CELL_KEYS, "trial", "state", "depth", "lr", "weight_decay", "val_dice",
    "test_dice_mean", "test_dice_std", "test_iou_mean", "seed", "duration_s",
)
TRIAL_NUMERIC = ("trial", "depth", "lr", "weight_decay", "val_dice", "test_dice_mean",
                 "test_dice_std", "test_iou_mean", "seed", "duration_s")
TRIAL_STATES = frozenset({"COMPLETE", "FAIL", "PRUNED", "RUNNING"})

#: Methods that are not prompt tuning (no meaningful prompt depth), from the method catalogue.
BASELINES = frozenset(name for name, method in METHODS.items() if method.is_baseline)


# --------------------------------------------------------------------------- output


def atomic_path(path: Path) -> contextlib.AbstractContextManager[Path]:
    """Context manager yielding a temp file path that replaces ``path`` atomically on success."""
    return atomic_write(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- labels


def _method_key(method: str) -> tuple[int, str]:
    idx = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return idx, method


def order_rows(frame: pd.DataFrame) -> list[str]:
    """Row labels present in ``frame`` (model, method columns): by model, then canonical method order."""
    if frame.empty:
        return []
    pairs = frame[["model", "method"]].drop_duplicates().itertuples(index=False)
    ordered = sorted(pairs, key=lambda p: (str(p[0]), _method_key(str(p[1]))))
    return [row_label(m, k) for m, k in ordered]


def order_datasets(frame: pd.DataFrame) -> list[str]:
    """Datasets present in ``frame``, sorted alphabetically."""
    if frame.empty:
        return []
    return sorted(str(d) for d in frame["dataset"].dropna().unique())


def with_row_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``frame`` with a ``row`` column holding ``model · method``."""
    out = frame.copy()
    labels = [row_label(m, k) for m, k in zip(out["model"], out["method"], strict=True)]
    out["row"] = pd.Series(labels, index=out.index, dtype=object)
    return out


# --------------------------------------------------------------------------- best.json


def _best_record(path: Path) -> dict:
    result = CellResult.read(path)
    record = {k: getattr(result, k) for k in BEST_COLUMNS}
    record.update({f"param_{k}": v for k, v in result.params.items()})
    return record


def load_best(paths: Iterable[Path]) -> pd.DataFrame:
    """Read ``best.json`` files into a DataFrame with one row per cell.

    Columns: ``model, method, dataset, trial, val_dice, test_dice_mean, test_dice_std,
    test_iou_mean, test_iou_std, n_test`` (floats, NaN for null) plus ``param_<name>`` for each
    tuned hyper-parameter.  Raises ``ValueError`` naming the file when a file is missing,
    unreadable, lacks required keys, holds wrong types, or repeats a cell of an earlier file.
    """
    records, seen = [], {}
    for path in map(Path, paths):
        record = _best_record(path)
        cell = tuple(record[k] for k in CELL_KEYS)
        if cell in seen:
            raise ValueError(f"{path}: cell {cell} already read from {seen[cell]}")
        seen[cell] = path
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    for col in BEST_COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype=object if col in CELL_KEYS else float)
    extra = sorted(c for c in frame.columns if c not in BEST_COLUMNS)
    return frame[[*BEST_COLUMNS, *extra]].reset_index(drop=True)


# --------------------------------------------------------------------------- trials.csv


def _read_trials_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: cannot read trials.csv ({exc})") from exc
    missing = [c for c in TRIAL_REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: trials.csv is missing column(s) {', '.join(missing)}")
    for col in TRIAL_NUMERIC:
        if col not in frame.columns:
            frame[col] = float("nan")
            continue
        try:
            frame[col] = pd.to_numeric(frame[col]).astype(float)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: column {col!r} is not numeric ({exc})") from exc
    for col in (*CELL_KEYS, "state"):
        frame[col] = frame[col].astype(str)
    bad = sorted(set(frame["state"]) - TRIAL_STATES)
    if bad:
        raise ValueError(f"{path}: unknown trial state(s) {bad}")
    return frame


def _empty_trials() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in TRIAL_NUMERIC else object)
                         for c in TRIAL_COLUMNS})


def load_trials(paths: Iterable[Path]) -> pd.DataFrame:
    """Concatenate the ``trials.csv`` files that exist (missing paths are skipped).

    Numeric columns are floats (NaN when empty); extra ``param_*`` columns are kept.  Raises
    ``ValueError`` naming the file when one is unreadable, lacks required columns
    (``model, method, dataset, trial, state, depth, test_dice_mean``), has non-numeric metric
    values or an unknown ``state``.  No existing file gives an empty frame with the standard
    columns.
    """
    frames = [_read_trials_csv(p) for p in map(Path, paths) if p.is_file()]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return _empty_trials()
    frame = pd.concat(frames, ignore_index=True, sort=False)
    extra = [c for c in frame.columns if c not in TRIAL_COLUMNS]
    return frame[[*TRIAL_COLUMNS, *extra]]
