"""Read per-cell tuning results (``best.json`` and ``trials.csv``) into DataFrames.

A *cell* is one (model, method, dataset) combination of the benchmark grid.  Also holds
the small helpers shared by :mod:`.tables` and :mod:`.figures` (row labels, ordering,
atomic output paths).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping
from numbers import Real
from pathlib import Path

import pandas as pd

from tunevlseg.cells import RESULT_METRICS, CellResult, replicates_of, row_label
from tunevlseg.data.atomic import atomic_write
from tunevlseg.methods import METHOD_ORDER, METHODS

__all__ = [
    "BASELINES",
    "BEST_COLUMNS",
    "CELL_KEYS",
    "METHOD_ORDER",
    "TRIAL_COLUMNS",
    "atomic_path",
    "incomplete_cells",
    "load_best",
    "load_trials",
    "order_datasets",
    "order_rows",
    "replicate_counts",
    "read_test_metrics",
    "row_label",
]

log = logging.getLogger(__name__)
CELL_KEYS = ("model", "method", "dataset")
#: best.json keys read into the frame: the cell, the selected trial and its metrics.
BEST_COLUMNS = (*CELL_KEYS, "trial", *RESULT_METRICS)

TRIAL_REQUIRED = (*CELL_KEYS, "trial", "state", "depth", "test_dice_mean")
TRIAL_COLUMNS = (
    *CELL_KEYS, "trial", "state", "depth", "lr", "weight_decay", "val_dice",
    "test_dice_mean", "test_dice_std", "test_iou_mean", "seed", "duration_s",
)
TRIAL_NUMERIC = ("trial", "depth", "lr", "weight_decay", "val_dice", "test_dice_mean",
                 "test_dice_std", "test_iou_mean", "seed", "duration_s", "peak_mem_mb")
TRIAL_STATES = frozenset({"COMPLETE", "FAIL", "PRUNED", "RUNNING"})

#: Methods that are not prompt tuning (no meaningful prompt depth), from the method catalogue.
BASELINES = frozenset(name for name, method in METHODS.items() if method.is_baseline)

log = logging.getLogger(__name__)


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


def order_datasets(frame: pd.DataFrame, order: list[str] | None = None) -> list[str]:
    """Datasets present in ``frame`` in the one order every table and figure uses: ``order`` (the config's
    ``benchmark.datasets``, the grid's), then any other alphabetically (all alphabetically without it)."""
    if frame.empty:
        return []
    present = {str(d) for d in frame["dataset"].dropna().unique()}
    first = [d for d in (order or []) if d in present]
    return first + sorted(present - set(first))


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


# --------------------------------------------------------------------------- seed replicates and cost


def replicate_results(cells: Mapping[tuple[str, str, str], Path]) -> list[Path]:
    """Every seed replicate's ``result.json`` present in the given cell folders (``seeds/<r>/``)."""
    found = []
    for folder in cells.values():
        seeds = Path(folder) / "seeds"
        if seeds.is_dir():
            found += sorted((p / "result.json" for p in seeds.iterdir() if p.name.isdigit()
                             and (p / "result.json").is_file()), key=lambda p: int(p.parent.name))
    return found


def _read_result(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read a seed replicate's result.json ({exc})") from exc
    if not isinstance(data, dict) or "replicate" not in data:
        raise ValueError(f"{path}: not a seed replicate's result.json (no 'replicate')")
    return data


def _cell_of(path: Path, record: dict) -> tuple[str, str, str]:
    try:
        return tuple(str(record[k]) for k in CELL_KEYS)
    except KeyError as exc:
        raise ValueError(f"{path}: a seed replicate's result.json without its cell ({exc})") from exc


def failed(record: dict) -> bool:
    """A seed replicate that failed (``status: failed``, e.g. a non-finite loss): it has no results."""
    return record.get("status") == "failed"


def replicate_counts(cells: Mapping[tuple[str, str, str], Path], result_files: Iterable[Path],
                     final_seeds: int | None = None) -> pd.DataFrame:
    """Seed replicates with results per cell against those expected; a warning for every cell with fewer.

    One row per cell of ``cells``: ``n_seeds`` (replicates with results: not failed, per-image rows),
    ``n_seeds_expected`` (``final_seeds`` for a tuned method, 1 for an untuned one; without
    ``final_seeds`` the replicates given for the cell) and ``missing`` (text: each replicate lacking,
    with its seed and error when it failed).
    """
    found: dict[tuple, dict[int, dict]] = {}
    for path in map(Path, result_files):
        record = _read_result(path)
        found.setdefault(_cell_of(path, record), {})[int(record["replicate"])] = record
    rows = []
    for cell, folder in cells.items():
        records = found.get(tuple(cell), {})
        expected = replicates_of(cell[1], final_seeds) if final_seeds is not None else max(records, default=0) + 1
        done = [r for r in range(expected) if r in records and _has_results(r, records[r])]
        missing = [_missing_text(r, records.get(r)) for r in range(expected) if r not in done]
        if missing:
            log.warning("%s: %d of %d seed replicates have results (%s); the Dice table marks the cell. A failed "
                        "replicate retrains with its next seed after `tunevlseg retry-failed %s` and a rerun",
                        folder, len(done), expected, "; ".join(missing), folder)
        rows.append(dict(zip(CELL_KEYS, cell, strict=True), n_seeds=len(done), n_seeds_expected=expected,
                         missing="; ".join(missing)))
    return pd.DataFrame.from_records(rows, columns=[*CELL_KEYS, "n_seeds", "n_seeds_expected", "missing"])


def _has_results(replicate: int, record: dict) -> bool:
    """Not failed, and (replicate 0, the best trial) the cell has a completed trial."""
    return not failed(record) and (replicate > 0 or record.get("trial") is not None)


def _missing_text(replicate: int, record: dict | None) -> str:
    if record is None:
        return f"replicate {replicate} not run"
    if failed(record):
        return f"replicate {replicate} failed (seed {record.get('seed')}: {record.get('error')})"
    return f"replicate {replicate} has no completed trial"


VOLUME_COLUMNS = ("case", "inter", "pred_px", "true_px")


def per_volume(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-slice rows (``case``, ``inter``, ``pred_px``, ``true_px``) -> one row per case (``id`` = case).

    Dice per volume = 2·Σ|P∩G| / (Σ|P| + Σ|G|) over the case's test slices, IoU = Σ|P∩G| / Σ|P∪G|;
    a volume with neither prediction nor target scores 1 (the per-image convention).
    """
    sums = frame.groupby("case", sort=True)[["inter", "pred_px", "true_px"]].sum()
    total = sums["pred_px"] + sums["true_px"]
    union = total - sums["inter"]
    dice = (2 * sums["inter"] / total.where(total > 0)).fillna(1.0)
    iou = (sums["inter"] / union.where(union > 0)).fillna(1.0)
    return pd.DataFrame({"id": sums.index.astype(str), "dice": dice.to_numpy(float), "iou": iou.to_numpy(float),
                         "n_slices": frame.groupby("case", sort=True).size().to_numpy()})


def read_test_metrics(path: Path) -> tuple[pd.DataFrame, bool]:
    """A replicate's per-image test metrics (``id, dice, iou``; volume slices also ``case`` and pixel counts) and whether the file was cut short — its last
    line unfinished or rows with missing fields (a copy or a disk that stopped mid-file): then its complete
    rows only. An unreadable file or a missing column is a ``ValueError`` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read per-image test metrics ({exc})") from exc
    lines = text.splitlines()
    cut = not text.endswith("\n")  # to_csv ends every row, the header too, with a newline
    if cut:
        lines = lines[:-1]
    try:
        frame = pd.read_csv(io.StringIO("\n".join(lines) + "\n"), dtype={"id": str}) if lines else pd.DataFrame()
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: cannot read per-image test metrics ({exc})") from exc
    if frame.empty and not len(frame.columns):
        return frame, cut
    missing = [c for c in ("id", "dice", "iou") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    unfinished = frame[["id", "dice", "iou"]].isna().any(axis=1)
    return frame.loc[~unfinished], cut or bool(unfinished.any())


def load_per_image(result_files: Iterable[Path], unit: str = "volume") -> pd.DataFrame:
    """Per-image test metrics of every seed replicate: ``model, method, dataset, replicate, id, dice, iou, unit``.

    Each ``result.json`` names its replicate; its ``test_metrics.csv`` lies beside it. A replicate
    without a completed trial (an empty file) or that failed adds no row. Slices of volumes (rows with a ``case``)
    become one row per volume (:func:`per_volume`; ``unit`` = ``volume``, else ``image``); the
    per-slice numbers stay in ``test_metrics.csv``. ``unit`` = ``image`` keeps the slices (``report.unit``).
    A file cut short adds its complete rows, with a one-line warning naming it (``tunevlseg report
    --partial`` then marks the cell partial).
    """
    if unit not in ("volume", "image"):
        raise ValueError(f"report.unit must be volume or image, got {unit!r}")
    frames = []
    for path in map(Path, result_files):
        record = _read_result(path)
        if failed(record):
            continue
        metrics = path.with_name("test_metrics.csv")
        frame, cut = read_test_metrics(metrics)
        if cut:
            log.warning("%s: cut short (its last row is incomplete): %d complete image row(s) read", metrics,
                        len(frame))
        if frame.empty:
            continue
        model, method, dataset = _cell_of(path, record)
        volumes = unit == "volume" and all(c in frame.columns for c in VOLUME_COLUMNS) and frame["case"].notna().all()
        frame = per_volume(frame) if volumes else frame
        frames.append(frame[["id", "dice", "iou"]].assign(model=model, method=method, dataset=dataset,
                                                            replicate=int(record["replicate"]),
                                                            unit="volume" if volumes else "image"))
    columns = [*CELL_KEYS, "replicate", "id", "dice", "iou", "unit"]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c in (*CELL_KEYS, "id", "unit") else float)
                             for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]


def incomplete_cells(per_image: pd.DataFrame, best: pd.DataFrame) -> dict[tuple[str, str, str], tuple[int, int]]:
    """Cells with a replicate evaluated on fewer test images than the cell's test split — ``n_test`` of its
    ``best.json``, or its fullest replicate: ``{cell: (images of the emptiest replicate, expected)}``."""
    if per_image.empty:
        return {}
    counts = per_image.groupby([*CELL_KEYS, "replicate"], sort=False).size()
    expected = {tuple(r[k] for k in CELL_KEYS): r.get("n_test") for _, r in best.iterrows()}
    out = {}
    for cell, per_replicate in counts.groupby(level=list(CELL_KEYS), sort=False):
        n_test = expected.get(cell)
        full = max(int(per_replicate.max()), int(n_test) if isinstance(n_test, Real) and n_test == n_test else 0)
        if int(per_replicate.min()) < full:
            out[cell] = (int(per_replicate.min()), full)
    return out


def load_cost(trials: pd.DataFrame, result_files: Iterable[Path]) -> pd.DataFrame:
    """One row per cell: trainable parameters at the best configuration, wall and GPU hours of every trial
    and seed replicate, peak memory, trials run (COMPLETE, FAIL or PRUNED)."""
    records: dict[tuple, dict] = {}
    for path in map(Path, result_files):
        record = _read_result(path)
        cell = _cell_of(path, record)
        entry = records.setdefault(cell, {"n_trainable": math.nan, "seconds": 0.0, "gpu_seconds": 0.0,
                                          "peak_mem_mb": math.nan})
        if record["replicate"] == 0:
            entry["n_trainable"] = _num(record.get("n_trainable"))
            entry["device"] = str(record.get("device") or "")
        else:  # replicate 0 is a trial: its time is in trials.csv
            seconds = _num(record.get("duration_s"), 0.0)
            entry["seconds"] += seconds
            entry["gpu_seconds"] += seconds if str(record.get("device", "")).startswith("cuda") else 0.0
        entry["peak_mem_mb"] = _max(entry["peak_mem_mb"], _num(record.get("peak_mem_mb")))
    rows = []
    for cell, entry in records.items():
        mine = trials[(trials["model"] == cell[0]) & (trials["method"] == cell[1]) & (trials["dataset"] == cell[2])]
        ran = mine[mine["state"] != "RUNNING"]
        trial_seconds = float(ran["duration_s"].fillna(0).sum()) if "duration_s" in ran else 0.0
        on_gpu = entry.get("device", "").startswith("cuda")
        peak = _max(entry["peak_mem_mb"], float(ran["peak_mem_mb"].max()) if "peak_mem_mb" in ran and len(ran)
                    else math.nan)
        rows.append(dict(model=cell[0], method=cell[1], dataset=cell[2], n_trainable=entry["n_trainable"],
                         train_hours=(trial_seconds + entry["seconds"]) / 3600,
                         gpu_hours=((trial_seconds if on_gpu else 0.0) + entry["gpu_seconds"]) / 3600,
                         peak_mem_mb=peak, n_trials=int(len(ran))))
    columns = [*CELL_KEYS, "n_trainable", "train_hours", "gpu_hours", "peak_mem_mb", "n_trials"]
    return pd.DataFrame.from_records(rows, columns=columns)


def _num(value, default=math.nan) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, Real):
        return default
    return float(value)


def _max(a: float, b: float) -> float:
    values = [v for v in (a, b) if not math.isnan(v)]
    return max(values) if values else math.nan
