"""`tunevlseg report --partial` with a per-image file cut short: a one-line warning naming it, and the cell
marked partial with its image count — neither bolded nor ranked."""

from __future__ import annotations

import json
import logging
import math

import pandas as pd
import pytest

from tunevlseg.cells import Grid
from tunevlseg.cli import main
from tunevlseg.report.collect import incomplete_cells, load_per_image, read_test_metrics

from .test_figures import write_cell

N_TEST = 10  # best_doc's n_test: the test split


def write_replicate(folder, cell, dices, cut_after=None):
    """seeds/0/result.json and test_metrics.csv; ``cut_after``: keep that many rows and half of the next."""
    seed = folder / "seeds" / "0"
    seed.mkdir(parents=True)
    (seed / "result.json").write_text(json.dumps({"model": cell[0], "method": cell[1], "dataset": cell[2],
                                                  "replicate": 0, "trial": 1, "seed": 1}))
    text = pd.DataFrame({"id": [f"img{i}" for i in range(len(dices))], "dice": dices, "iou": dices}).to_csv(index=False)
    if cut_after is not None:
        lines = text.splitlines(keepends=True)
        text = "".join(lines[:1 + cut_after]) + lines[1 + cut_after][:6]
    (seed / "test_metrics.csv").write_text(text)
    return seed / "test_metrics.csv"


def test_read_test_metrics_keeps_the_complete_rows_of_a_cut_file(tmp_path):
    path = tmp_path / "test_metrics.csv"
    path.write_text("id,dice,iou\na,0.5,0.4\nb,0.25,0.2\nc,0.1")  # no final newline, c's iou missing
    frame, cut = read_test_metrics(path)
    assert cut and list(frame["id"]) == ["a", "b"]
    path.write_text("id,dice,iou\na,0.5,0.4\nb,0.25\n")  # a row with a missing field
    frame, cut = read_test_metrics(path)
    assert cut and list(frame["id"]) == ["a"]
    path.write_text("id,dice,iou\na,0.5,0.4\n")
    assert read_test_metrics(path)[1] is False


def test_incomplete_cells_compare_with_the_test_split(tmp_path):
    per_image = pd.DataFrame({"model": "m", "method": ["coop"] * 3 + ["vpt"] * 4, "dataset": "d",
                              "replicate": [0, 0, 1, 0, 0, 1, 1], "id": list("abaabab"), "dice": 0.5, "iou": 0.5})
    best = pd.DataFrame({"model": ["m", "m"], "method": ["coop", "vpt"], "dataset": ["d", "d"],
                         "n_test": [2.0, math.nan]})
    # coop: replicate 1 has 1 of its 2 images; vpt: both replicates complete (2 = its fullest replicate)
    assert incomplete_cells(per_image, best) == {("m", "coop", "d"): (1, 2)}


def test_partial_report_does_not_bold_or_rank_a_cut_cell(tmp_path, caplog):
    grid = Grid(("clipseg",), ("zeroshot", "coop", "vpt"), ("tissue",), {"tissue": "non-radiology"})
    results = tmp_path / "results"
    means = {"zeroshot": 0.3, "coop": 0.95, "vpt": 0.6}
    cut_file = None
    for method, dice in means.items():
        cell = ("clipseg", method, "tissue")
        folder = write_cell(results, cell, dice)
        dices = [dice] * N_TEST
        path = write_replicate(folder, cell, dices, cut_after=1 if method == "coop" else None)
        cut_file = path if method == "coop" else cut_file
    settings = json.dumps({"models": grid.models, "methods": grid.methods, "datasets": grid.datasets,
                           "domains": grid.domains, "dpi": 40})
    out = tmp_path / "partial"
    with caplog.at_level(logging.WARNING):
        assert main(["report", "--partial", "--results", str(results), "--tables", str(out / "tables/dice"),
                     "--figures", str(out / "figures"), "--settings", settings]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    cut = [w for w in warnings if "cut short" in w]
    assert cut == [f"{cut_file}: cut short (its last row is incomplete): 1 complete image row(s) read"]
    assert "clipseg/coop/tissue: test Dice of 1 of 10 images: reported as partial, not ranked" in warnings
    md = (out / "tables/dice.md").read_text()
    assert "| clipseg · coop | 0.950 (partial: 1 of 10 images) | — |" in md  # not bold, not in the row mean
    assert "**0.600 [0.600, 0.600]**" in md and "**0.950" not in md  # the complete cells' best is bold
    csv = pd.read_csv(out / "tables/dice.csv", index_col=0)
    assert math.isnan(csv.loc["clipseg · coop", "tissue_mean"])
    assert csv.loc["clipseg · vpt", "tissue_mean"] == pytest.approx(0.6)
    pairwise = pd.read_csv(next((out / "tables").glob("*pairwise*.csv")))
    assert "coop" not in " ".join(map(str, pairwise.to_numpy().ravel()))  # not compared, not ranked


def test_load_per_image_reads_the_cut_file_rows(tmp_path):
    cell = ("clipseg", "coop", "tissue")
    folder = tmp_path / "cell"
    write_replicate(folder, cell, [0.9] * N_TEST, cut_after=1)
    frame = load_per_image([folder / "seeds/0/result.json"])
    assert list(frame["id"]) == ["img0"] and frame["dice"].tolist() == [0.9]
