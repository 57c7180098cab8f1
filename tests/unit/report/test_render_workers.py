"""render_report(workers=N): the per-cell Optuna figures and qualitative panels drawn in worker processes
are the files the serial run writes, and a worker's error reaches the caller naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.report.grid_fixtures import per_image_frame, write_cells
from tests.unit.report.test_figures import make_journal
from tunevlseg.cells import CellFiles, Grid
from tunevlseg.report.layout import figure_files
from tunevlseg.report.render import render_report

GRID = Grid(("clipseg",), ("zeroshot", "coop", "vpt"), ("kvasir", "isic"))


@pytest.fixture
def cells(tmp_path):
    per_image = per_image_frame(GRID, {"clipseg · vpt": 0.2, "clipseg · coop": 0.1}, n_images=10, n_seeds=1)
    cells = write_cells(tmp_path / "results", GRID, per_image, n_trials=6)
    for n, cell in enumerate(GRID.tuned_cells()):
        make_journal(CellFiles(str(cells[cell])).journal, n_complete=3 + n)  # a different study per cell
    return cells


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_workers_write_the_serial_files(cells, tmp_path):
    serial = render_report(GRID, cells, tmp_path / "a/tables/dice", tmp_path / "a/figures", dpi=40)
    parallel = render_report(GRID, cells, tmp_path / "b/tables/dice", tmp_path / "b/figures", dpi=40, workers=2)
    assert [p.relative_to(tmp_path / "a") for p in serial] == [p.relative_to(tmp_path / "b") for p in parallel]
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    figs = figure_files(tmp_path / "a/figures", GRID)
    drawn_by_workers = [*figs["history"].values(), *figs["importances"].values(), *figs["qualitative"].values()]
    assert len(drawn_by_workers) == 2 * 4 + 2
    assert {str(Path(p).relative_to(tmp_path / "a")) for p in drawn_by_workers} <= set(a)
    assert a.keys() == b.keys() and len(a) >= 16
    assert [k for k in a if a[k] != b[k]] == []


def test_a_worker_error_names_the_file(cells, tmp_path):
    broken = Path(CellFiles(str(cells[("clipseg", "vpt", "isic")])).journal)
    broken.write_text("this is not an Optuna journal\n")
    with pytest.raises(ValueError, match=f"{broken}: cannot read the Optuna journal"):
        render_report(GRID, cells, tmp_path / "t/dice", tmp_path / "f", dpi=40, workers=2)
