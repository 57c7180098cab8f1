"""Time of the report on a synthetic paper-sized grid, and of its statistics alone.

Default: 80 cells (clipseg with all 8 methods + cris with zeroshot / coop, 8 datasets), 3 seeds,
500 test images per dataset, 20 trials per tuned cell, per-image results and cost given.
Prints figures; asserts nothing. Run from the repository root:
    .venv/bin/python tests/bench/report_stats.py [--images 500] [--seeds 3] [--dpi 150]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.unit.report.grid_fixtures import cost_frame, per_image_frame, write_cells  # noqa: E402
from tunevlseg.cells import Grid  # noqa: E402
from tunevlseg.report.ranking import complete_block, friedman_ranks, rank_stability  # noqa: E402
from tunevlseg.report.render import render_report  # noqa: E402
from tunevlseg.report.stats import cell_summary, image_means, pairwise_tests, versus_best  # noqa: E402


class _Grid80(Grid):
    """clipseg · every method and cris · (zeroshot, coop): 10 rows."""

    def pairs(self):
        return [("clipseg", k) for k in self.methods] + [("cris", "zeroshot"), ("cris", "coop")]


TIMES: dict[str, float] = {}


def _timed(label: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    TIMES[label] = time.perf_counter() - start
    print(f"{label:<32s} {TIMES[label]:7.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--datasets", type=int, default=8)
    ap.add_argument("--dpi", type=int, default=150)
    args = ap.parse_args()
    methods = ("zeroshot", "finetune", "coop", "cocoop", "vpt", "maple", "shared_attention", "shared_separate")
    grid = _Grid80(("clipseg", "cris"), methods, tuple(f"ds{i}" for i in range(args.datasets)))
    offsets = {r: 0.02 * i for i, r in enumerate(grid.rows())}
    per_image = per_image_frame(grid, offsets, n_images=args.images, n_seeds=args.seeds)
    print(f"{len(grid.cells())} cells, {len(grid.rows())} rows, {len(per_image)} per-image rows")
    summary = _timed("cell_summary (two-way bootstrap)", cell_summary, per_image)
    means = _timed("image_means", image_means, per_image)
    _timed("versus_best (seed-averaged)", versus_best, means, grid.rows())
    _timed("versus_best (every seed pair)", versus_best, per_image, grid.rows())
    _timed("pairwise_tests (seed-averaged)", pairwise_tests, means, grid.rows())
    _timed("pairwise_tests (every seed pair)", pairwise_tests, per_image, grid.rows())
    _timed("friedman + nemenyi", friedman_ranks, complete_block(summary, grid.rows()))
    _timed("rank_stability (1000)", rank_stability, means, grid.rows())
    with tempfile.TemporaryDirectory() as tmp:
        cells = write_cells(Path(tmp) / "results", grid, per_image)
        out = Path(tmp) / "out"
        _timed("render_report (no stats)", render_report, grid, cells, out / "a/tables/dice", out / "a/figures",
               dpi=args.dpi)
        # no journals here: the per-cell Optuna figures are placeholders, so workers gain less than on a real run
        _timed("render_report (all)", render_report, grid, cells, out / "b/tables/dice", out / "b/figures",
               dpi=args.dpi, per_image=per_image, cost=cost_frame(grid))
        _timed("render_report (all, 2 workers)", render_report, grid, cells, out / "c/tables/dice", out / "c/figures",
               dpi=args.dpi, per_image=per_image, cost=cost_frame(grid), workers=2)
        print(f"2 workers / serial: {TIMES['render_report (all, 2 workers)'] / TIMES['render_report (all)']:.2f}")


if __name__ == "__main__":
    main()
