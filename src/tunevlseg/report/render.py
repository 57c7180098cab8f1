"""Write every table and figure of the report for a grid, from whatever cells are given.

Used by ``tunevlseg aggregate`` (the workflow's rule: every cell finished) and by
``tunevlseg report [--partial]`` (scans the results folder; with ``--partial`` cells that have not
finished are shown as "—" / placeholders instead of being an error).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from tunevlseg.jsonio import write_csv
from tunevlseg.report.collect import CELL_KEYS, incomplete_cells, load_best, load_trials, row_label
from tunevlseg.report.cost import cost_table, dice_vs_params, plot_dice_vs_params
from tunevlseg.report.domains import domain_means, plot_domain_bars
from tunevlseg.report.figures import depth_correlations, plot_depth_vs_dice, plot_dice_heatmap, row_palette
from tunevlseg.cells import CellFiles, Grid, cell_dir
from tunevlseg.report.layout import figure_files, table_files
from tunevlseg.report.qualitative import load_examples, plot_qualitative
from tunevlseg.report.ranking import cd_table, complete_block, friedman_ranks, plot_critical_difference, rank_stability
from tunevlseg.report.stats import (
    UNSTABLE_SPREAD,
    cell_summary,
    check_per_image,
    image_means,
    pairwise_tests,
    summary_as_best,
    unstable_cells,
    versus_best,
)
from tunevlseg.report.study_figures import load_study_snapshot, plot_history, plot_importances
from tunevlseg.report.tables import write_dice_tables

__all__ = ["examples_path", "find_cells", "render_report"]

log = logging.getLogger(__name__)
Cell = tuple[str, str, str]


def find_cells(results: Path, grid: Grid, partial: bool) -> dict[Cell, Path]:
    """Folders of the grid's cells under ``results`` that hold a ``best.json``.

    Without ``partial`` a cell without ``best.json`` is an error listing the missing cells.
    """
    found, missing = {}, []
    for cell in grid.cells():
        folder = cell_dir(results, *cell)
        if Path(CellFiles(str(folder)).best_json).is_file():
            found[cell] = folder
        else:
            missing.append("/".join(cell))
    if missing and not partial:
        raise FileNotFoundError(f"{results}: {len(missing)} cell(s) have no best.json yet: "
                                f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} "
                                "(use --partial to report the finished ones)")
    return found


def examples_path(folder: Path, trial: float) -> Path | None:
    """The best trial's examples file of a cell (``trials/<nnn>/examples.npz``), None without a trial."""
    if trial is None or (isinstance(trial, float) and math.isnan(trial)):
        return None
    return CellFiles(str(folder)).trial(int(trial)).examples


def _best_trials(best: pd.DataFrame) -> dict[Cell, float]:
    return {tuple(r[k] for k in CELL_KEYS): r["trial"] for _, r in best.iterrows()}


def _without_incomplete(per_image: pd.DataFrame, best: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """(per-image rows of the complete cells, {(row, dataset): the Dice table's text} of the incomplete ones)."""
    incomplete = incomplete_cells(per_image, best)
    keys = per_image[list(CELL_KEYS)].apply(tuple, axis=1)
    marks = {}
    for cell, (images, expected) in incomplete.items():
        mean = float(per_image.loc[keys == cell, "dice"].mean())
        marks[(row_label(cell[0], cell[1]), cell[2])] = f"{mean:.3f} (partial: {images} of {expected} images)"
        log.warning("%s: test Dice of %d of %d images: reported as partial, not ranked", "/".join(cell), images,
                    expected)
    return per_image.loc[~keys.isin(list(incomplete))], marks


def _check_in_grid(grid: Grid, frame: pd.DataFrame, what: str) -> None:
    cells = set(grid.cells())
    present = frame[list(CELL_KEYS)].drop_duplicates().itertuples(index=False)
    foreign = sorted({tuple(r) for r in present} - cells)
    if foreign:
        raise ValueError(f"{what} of cell(s) outside the configured grid: {foreign}")


def grid_palette(grid: Grid) -> dict[str, tuple]:
    """The one colour of each of the grid's rows, passed to every figure (:func:`row_palette`: the method
    catalogue's hue, the shade by the config's model order)."""
    return row_palette(grid.rows(), list(grid.models))


def _write_statistics(grid: Grid, per_image: pd.DataFrame, summary: pd.DataFrame, tables: Path,
                      files: dict, dpi: int) -> list[Path]:
    """Pairwise tests, rank stability and the critical-difference diagram from per-image results."""
    rows, datasets, paths = grid.rows(), list(grid.datasets), table_files(tables)
    means = image_means(per_image)
    write_csv(Path(paths["pairwise"]), pairwise_tests(per_image, rows))
    write_csv(Path(paths["rank_stability"]), rank_stability(means, rows))
    friedman = friedman_ranks(complete_block(summary, rows, datasets))
    write_csv(Path(files["cd_table"]), cd_table(friedman))
    png = plot_critical_difference(friedman, files["critical_difference"], dpi=dpi, palette=grid_palette(grid))
    return [Path(paths["pairwise"]), Path(paths["rank_stability"]), Path(files["cd_table"]), png]


def _write_unstable(summary: pd.DataFrame, tables: Path, spread: float) -> tuple[pd.DataFrame, Path]:
    """``unstable.csv`` (:func:`unstable_cells`), with a warning per cell naming its replicate means."""
    unstable = unstable_cells(summary, spread)
    for _, r in unstable.iterrows():
        log.warning("unstable cell %s/%s/%s: replicate means %s (%s)", r["model"], r["method"], r["dataset"],
                    r["rep_means"].replace(";", ", "), r["reason"])
    path = Path(table_files(tables)["unstable"])
    write_csv(path, unstable)
    return unstable, path


def _write_cost(grid: Grid, cost: pd.DataFrame, dice: pd.DataFrame, tables: Path, files: dict,
                dpi: int) -> list[Path]:
    """The cost table (a checked :func:`cost_table`) and the Dice-vs-parameters figure (and its points)."""
    path = Path(table_files(tables)["cost"])
    write_csv(path, cost)
    points = dice_vs_params(cost, dice)
    write_csv(Path(files["params_table"]), points)
    return [path, Path(files["params_table"]), plot_dice_vs_params(points, files["dice_vs_params"], dpi=dpi,
                                                                   datasets=list(grid.datasets),
                                                                   palette=grid_palette(grid))]


class _Done:
    """A task run in this process at submission: the ``result()`` of a future, exceptions raised at once."""

    def __init__(self, fn: Callable, *args):
        self._value = fn(*args)

    def result(self):
        return self._value


@contextmanager
def _tasks(workers: int) -> Iterator[Callable]:
    """``submit(fn, *args)`` running tasks in ``workers`` processes (inline for ``workers <= 1``).

    Worker processes come from a fork server that imported this module once (spawn where there is no
    fork server), never forked from this process with its library threads; a task's exception is
    raised by its ``result()``.
    """
    if workers <= 1:
        yield _Done
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield pool.submit


def _study_figures(cells: list[Cell], folders: dict[Cell, Path], files: dict, dpi: int) -> list[Path]:
    """The Optuna history and importance figures of ``cells`` (journal in ``folders[cell]``, if any)."""
    out = []
    for cell in cells:
        folder = folders.get(cell)
        study = load_study_snapshot(Path(CellFiles(str(folder)).journal)) if folder is not None else None
        title = " · ".join(cell)
        out.append(plot_history(study, files["history"][cell], title, dpi=dpi))
        out.append(plot_importances(study, files["importances"][cell], title, dpi=dpi))
    return out


def _qualitative(dataset: str, rows: dict[str, Path | None], out_png: str, dpi: int) -> Path:
    """The qualitative panel of ``dataset`` from each row's best-trial examples file (None: missing)."""
    panel_rows = {}
    for label, path in rows.items():
        panel_rows[label] = load_examples(path) if path is not None else None
        if path is not None and panel_rows[label] is None:
            log.info("%s: no examples stored; shown as missing", path)
    return plot_qualitative(dataset, panel_rows, out_png, dpi=dpi)


def render_report(grid: Grid, cells: Mapping[Cell, Path], tables: Path, figures: Path,
                  dpi: int = 150, study_dirs: Mapping[Cell, Path] | None = None,
                  trial_files: list[Path] | None = None, per_image: pd.DataFrame | None = None,
                  cost: pd.DataFrame | None = None, workers: int = 1,
                  unstable_spread: float = UNSTABLE_SPREAD, seeds: pd.DataFrame | None = None,
                  partial: bool = False) -> list[Path]:
    """Write the Dice tables and every figure of :func:`figure_files` for ``grid``.

    ``cells`` maps the finished cells to their folders (``best.json``, ``trials.csv``, trial
    folders); grid cells left out appear as "—" in the tables, blank in the heat map, missing in the
    domain bars and qualitative panels.  The Optuna figures of a tuned cell read ``study.journal``
    in ``study_dirs[cell]`` when given (so a cell still running shows its history), else in
    ``cells[cell]``.  ``trial_files`` default to the ``trials.csv`` of every finished cell.

    ``per_image`` (see :mod:`tunevlseg.report.stats`: every retrained seed's per-image test Dice)
    makes the Dice table, heat map, domain bars and Dice-vs-parameters figure show the
    seed-averaged means with bootstrap CIs and the "not significantly worse" marks, and adds the
    pairwise tests, rank stability and critical-difference diagram; cells missing from it are "—".
    Cells whose replicates disagree (:func:`unstable_cells` with ``unstable_spread``) are marked in
    the Dice table and heat map, listed in ``unstable.csv`` and logged as warnings.
    ``seeds`` (:func:`tunevlseg.report.collect.replicate_counts`) marks the cells of the Dice table
    with fewer seed replicates than expected. ``cost`` (see :mod:`tunevlseg.report.cost`) adds the cost table and the Dice-vs-parameters
    figure.  With ``workers`` > 1 the per-cell Optuna figures and the qualitative panels (over half
    of the rendering) are drawn in that many processes while this one writes the rest; the files
    are the same.  With ``partial`` a cell whose per-image results hold fewer test images than its
    test split (a replicate still running, a cut file) is neither bolded nor ranked: the Dice table
    reads ``0.512 (partial: 1 of 9 images)`` and the statistics and figures leave it out.  Returns the
    paths written.
    """
    best_files = [Path(CellFiles(str(p)).best_json) for p in cells.values()]
    best = load_best(best_files)
    foreign = [tuple(r[k] for k in CELL_KEYS) for _, r in best.iterrows()
               if tuple(r[k] for k in CELL_KEYS) not in set(grid.cells())]
    if foreign:
        raise ValueError(f"best.json of cell(s) outside the configured grid: {foreign}")
    if trial_files is None:
        trial_files = [Path(CellFiles(str(p)).trials_csv) for p in cells.values()]
    trials = load_trials(trial_files)
    rows, datasets = grid.rows(), list(grid.datasets)
    files = figure_files(figures, grid)
    shown, not_worse, unstable = best, None, None  # shown: the numbers of the Dice table and figures
    if cost is not None:  # every input is checked before anything is written
        cost = cost_table(cost, rows, datasets)
        _check_in_grid(grid, cost, "cost")
    marks = {}
    if per_image is not None:
        if partial:
            per_image, marks = _without_incomplete(per_image, best)
        per_image = check_per_image(per_image)
        _check_in_grid(grid, per_image, "per-image results")
    study_dirs = dict(study_dirs or {})
    folders = {c: study_dirs.get(c, cells.get(c)) for c in grid.tuned_cells()}
    best_trial = _best_trials(best)
    panels = {d: {row_label(m, k): (examples_path(cells[(m, k, d)], best_trial.get((m, k, d)))
                                    if (m, k, d) in cells else None) for m, k in grid.pairs()}
              for d in grid.datasets}
    with _tasks(workers) as submit:  # one task per dataset each: they take similar times
        studies = [submit(_study_figures, [c for c in grid.tuned_cells() if c[2] == d], folders, files, dpi)
                   for d in grid.datasets]
        qualitative = [submit(_qualitative, d, panels[d], files["qualitative"][d], dpi) for d in grid.datasets]
        out = []
        if per_image is not None:
            summary = cell_summary(per_image)
            shown, not_worse = summary_as_best(summary), versus_best(per_image, rows)
            if seeds is not None:
                shown = shown.merge(seeds[[*CELL_KEYS, "n_seeds_expected"]], on=list(CELL_KEYS), how="left")
            out += _write_statistics(grid, per_image, summary, Path(tables), files, dpi)
            unstable, path = _write_unstable(summary, Path(tables), unstable_spread)
            out.append(path)
        if cost is not None:
            out += _write_cost(grid, cost, shown, Path(tables), files, dpi)
        volumes = sorted(set(per_image.loc[per_image["unit"] == "volume", "dataset"])) \
            if per_image is not None and "unit" in per_image else []
        out += write_dice_tables(shown, Path(tables), datasets=datasets, rows=rows, not_worse=not_worse,
                                 unstable=unstable, volume_datasets=volumes, partial=marks)
        out.append(plot_dice_heatmap(shown, files["heatmap"], dpi=dpi, datasets=datasets, rows=rows,
                                     unstable=unstable))
        correlations = depth_correlations(trials, datasets)
        out.append(plot_depth_vs_dice(trials, files["depth"], dpi=dpi, corr=correlations, datasets=datasets,
                                      palette=grid_palette(grid)))
        write_csv(Path(files["correlations"]), correlations)
        domain_table = domain_means(shown, grid.domains, datasets=datasets, rows=rows)
        write_csv(Path(files["domain_table"]), domain_table)
        out.append(plot_domain_bars(domain_table, files["domains"], dpi=dpi, palette=grid_palette(grid)))
        out += [Path(files["correlations"]), Path(files["domain_table"])]
        for task in studies:
            out += task.result()
        out += [task.result() for task in qualitative]
    return [Path(p) for p in out]
