"""Report figures beyond the Dice table: domain bars, Optuna history / importances, qualitative panel,
the examples writer, and the (partial) report over a results folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from matplotlib import pyplot as plt
from matplotlib.image import AxesImage
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from tunevlseg.cli import main
from tunevlseg.data.cache import PreparedSplit, SegmentationDataset
from tunevlseg.data.prepare import prepare_dataset
from tunevlseg.data.synthetic import write_synthetic
from tunevlseg.prompts import build_learner
from tunevlseg.report.collect import load_best
from tunevlseg.report.domains import domain_bars_figure, domain_means
from tunevlseg.cells import Grid
from tunevlseg.report.layout import figure_files
from tunevlseg.report.qualitative import load_examples, qualitative_figure
from tunevlseg.report.study_figures import history_axes, importance_axes, load_study_snapshot, plot_history
from tunevlseg.train.examples import example_indices, save_examples

PNG = b"\x89PNG\r\n\x1a\n"
# dataset -> domain; test Dice mean of each (model, method, dataset) cell; None = cell absent
DOMAINS = {"ct": "radiology", "mri": "radiology", "endo": "non-radiology", "photo": "natural"}
DICE = {
    ("clipseg", "coop", "ct"): 0.60, ("clipseg", "coop", "mri"): 0.80, ("clipseg", "coop", "endo"): 0.50,
    ("clipseg", "coop", "photo"): 0.90,
    ("clipseg", "vpt", "ct"): 0.40, ("clipseg", "vpt", "mri"): None, ("clipseg", "vpt", "endo"): 0.70,
    ("clipseg", "vpt", "photo"): None,
}


def best_doc(cell, dice, trial=1):
    model, method, dataset = cell
    return {"model": model, "method": method, "dataset": dataset, "trial": trial, "params": {"depth": 1},
            "val_dice": dice, "test_dice_mean": dice, "test_dice_std": 0.1, "test_iou_mean": dice,
            "test_iou_std": 0.1, "n_test": 10}


def best_frame(tmp_path, dice_by_cell):
    paths = []
    for cell, dice in dice_by_cell.items():
        if dice is None:
            continue
        path = tmp_path.joinpath(*cell, "best.json")
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(best_doc(cell, dice)))
        paths.append(path)
    return load_best(paths)


# ----------------------------------------------------------------------------- domains


def test_domain_bars_equal_means_of_the_domain_cells(tmp_path):
    best = best_frame(tmp_path, DICE)
    datasets, rows = list(DOMAINS), ["clipseg · coop", "clipseg · vpt"]
    table = domain_means(best, DOMAINS, datasets=datasets, rows=rows)
    fig = domain_bars_figure(table)
    ax = fig.axes[0]
    domains = ["radiology", "non-radiology", "natural"]
    assert list(dict.fromkeys(table["domain"])) == domains
    expected = {  # mean over the present cells of the domain's datasets
        "clipseg · coop": [(0.60 + 0.80) / 2, 0.50, 0.90],
        "clipseg · vpt": [0.40, 0.70, math.nan],
    }
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    assert set(bars) == set(expected)
    for row, values in expected.items():
        np.testing.assert_allclose(bars[row], values)
    vpt = table[table["row"] == "clipseg · vpt"].set_index("domain")
    assert vpt.loc["radiology", "n_cells"] == 1 and vpt.loc["radiology", "n_datasets"] == 2
    assert vpt.loc["natural", "n_cells"] == 0
    assert "—" in [t.get_text() for t in ax.texts]  # the absent natural cell of vpt


def test_domain_unspecified_and_unknown(tmp_path):
    best = best_frame(tmp_path, {("m", "coop", "a"): 0.5, ("m", "coop", "b"): 0.3})
    table = domain_means(best, {"a": "natural"})
    assert dict(zip(table["domain"], table["dice_mean"])) == {"natural": 0.5, "unspecified": 0.3}
    with pytest.raises(ValueError, match="xray"):
        domain_means(best, {"a": "xray"})


# ----------------------------------------------------------------------------- Optuna


def make_journal(path, n_complete, n_fail=0, vary=True):
    """A journal study: n_complete COMPLETE trials (value = lr * 10 + depth), then n_fail FAIL trials."""
    study = optuna.create_study(study_name="m.coop.d", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(path))),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(n_complete + n_fail):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True) if vary else trial.suggest_float("lr", 0.01, 0.01)
        depth = trial.suggest_int("depth", 1, 3) if vary else trial.suggest_int("depth", 2, 2)
        if i < n_complete:
            study.tell(trial, lr * 10 + depth)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return study


def test_history_has_one_point_per_completed_trial(tmp_path):
    journal = tmp_path / "study.journal"
    make_journal(journal, n_complete=4, n_fail=2).ask()  # + a trial still RUNNING (a live study)
    raw = journal.read_bytes()
    study = load_study_snapshot(journal)
    assert journal.read_bytes() == raw and sorted(p.name for p in tmp_path.iterdir()) == ["study.journal"]
    figures = set(plt.get_fignums())
    ax = history_axes(study)
    try:
        points = np.concatenate([c.get_offsets() for c in ax.collections])
        values = sorted(t.value for t in study.trials if t.state.name == "COMPLETE")
        assert len(points) == 4 and sorted(points[:, 1]) == pytest.approx(values)
        best_line = ax.lines[0].get_ydata()
        assert best_line[-1] == pytest.approx(max(values))
    finally:
        plt.close(ax.figure)
    out = plot_history(study, tmp_path / "h.png", "m · coop · d", dpi=60)
    assert out.read_bytes()[:8] == PNG and set(plt.get_fignums()) == figures  # no figure left open


def test_importances_need_enough_varying_completed_trials(tmp_path):
    from tunevlseg.report.stats import MIN_IMPORTANCE_TRIALS

    assert MIN_IMPORTANCE_TRIALS == 10
    study = make_journal(tmp_path / "a.journal", n_complete=10)
    ax, reason = importance_axes(study)
    try:
        assert reason is None and len(ax.patches) == 2  # one bar per parameter: lr, depth
        assert sum(p.get_width() for p in ax.patches) == pytest.approx(1.0, abs=0.02)
    finally:
        plt.close(ax.figure)
    # 2 completed trials (the demo): a stated note, no bars computed from them
    two = make_journal(tmp_path / "b.journal", n_complete=2, n_fail=3)
    assert importance_axes(two) == (None, "n too small (n = 2 completed trials, needs ≥ 10)")
    assert importance_axes(make_journal(tmp_path / "c.journal", n_complete=10, vary=False)) == \
        (None, "no parameter varies")
    assert plt.get_fignums() == []


def test_snapshot_of_missing_and_broken_journal(tmp_path):
    assert load_study_snapshot(tmp_path / "none.journal") is None
    bad = tmp_path / "bad.journal"
    bad.write_text("not json\n{}\n")
    with pytest.raises(ValueError, match="bad.journal"):
        load_study_snapshot(bad)


# ----------------------------------------------------------------------------- qualitative


def examples(k=3, size=8, ids=None, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (k, size, size, 3), dtype=np.uint8),
            "gt": (rng.random((k, size, size)) > 0.5).astype(np.uint8),
            "prob": rng.random((k, size, size)).astype(np.float16),
            "ids": np.asarray(ids or [f"s{i}" for i in range(k)])}


def image_of(ax) -> np.ndarray | None:
    images = [c for c in ax.get_children() if isinstance(c, AxesImage)]
    return np.asarray(images[0].get_array()) if images else None


def test_qualitative_prediction_is_the_thresholded_probability():
    coop, vpt = examples(seed=1), examples(seed=2)
    other = examples(seed=3, ids=["x", "y", "z"])
    rows = {"m · zeroshot": None, "m · coop": coop, "m · vpt": vpt, "m · maple": other}
    fig = qualitative_figure("tissue", rows)
    axes = np.asarray(fig.axes).reshape(2 + len(rows), 3)
    for j in range(3):
        np.testing.assert_array_equal(image_of(axes[0, j]), coop["image"][j])
        np.testing.assert_array_equal(image_of(axes[1, j]), coop["gt"][j])
        for r, ex in ((3, coop), (4, vpt)):
            pred = image_of(axes[r, j])
            np.testing.assert_array_equal(pred, ex["prob"][j].astype(np.float32) > 0.5)
            dice = 2 * (pred.astype(bool) & coop["gt"][j].astype(bool)).sum() / (pred.sum() + coop["gt"][j].sum())
            assert axes[r, j].texts[0].get_text() == f"{dice:.2f}"
        assert image_of(axes[2, j]) is None and axes[2, j].texts[0].get_text() == "—"
        assert image_of(axes[5, j]) is None and axes[5, j].texts[0].get_text() == "other samples"
    assert [axes[r, 0].get_ylabel() for r in range(2, 6)] == [r.replace(" · ", "\n") for r in rows]


def test_qualitative_without_any_examples_and_bad_file(tmp_path):
    fig = qualitative_figure("tissue", {"m · coop": None})
    assert len(fig.axes) == 1 and "no examples" in fig.axes[0].texts[0].get_text()
    assert load_examples(tmp_path / "absent.npz") is None
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((2, 4, 4, 3), np.uint8), gt=np.zeros((2, 4, 4), np.uint8),
             prob=np.zeros((2, 5, 5), np.float16), ids=np.asarray(["a", "b"]))
    with pytest.raises(ValueError, match="bad.npz.*disagree"):
        load_examples(bad)


# ----------------------------------------------------------------------------- examples writer


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples_data")
    write_synthetic("tissue", root / "raw", n=40, image_size=32, seed=5)
    prepare_dataset(root / "raw", root / "prepared", size=32)
    return PreparedSplit(root / "prepared", "test")


def test_example_indices_evenly_spaced():
    assert example_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert example_indices(3, 5).tolist() == [0, 1, 2]
    assert example_indices(0, 4).tolist() == []


def test_save_examples_stores_the_model_probabilities(tiny_adapter, test_split, tmp_path):
    torch.manual_seed(0)
    learner = build_learner("coop", tiny_adapter.dims, depth=1, n_ctx=2)
    out = save_examples(tiny_adapter, learner, test_split, tmp_path / "trials/001/examples.npz", k=3,
                        device="cpu", amp=False)
    saved = load_examples(out)
    idx = example_indices(len(test_split), 3)
    assert saved["index"].tolist() == idx.tolist() and saved["ids"].tolist() == [test_split.ids[i] for i in idx]
    ds = SegmentationDataset(test_split)
    batch = [ds[int(i)] for i in idx]
    with torch.no_grad():
        logits = tiny_adapter(torch.stack([b["image"] for b in batch]),
                              tiny_adapter.tokenize([b["prompt"] for b in batch], learner.text_ctx), learner)
    np.testing.assert_allclose(saved["prob"].astype(np.float32), torch.sigmoid(logits[:, 0]).numpy(), atol=1e-3)
    np.testing.assert_array_equal(saved["gt"], np.stack([np.asarray(test_split.masks[i]) for i in idx]))
    np.testing.assert_array_equal(saved["image"], np.stack([np.asarray(test_split.images[i]) for i in idx]))
    assert saved["prompt"].tolist() == [test_split.prompts[i] for i in idx]
    small = load_examples(save_examples(tiny_adapter, learner, test_split, tmp_path / "s.npz", k=2, max_side=16,
                                        device="cpu", amp=False))
    assert small["image"].shape == (2, 16, 16, 3) and small["prob"].shape == (2, 16, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz", "trials"]  # no temp files left


# ----------------------------------------------------------------------------- (partial) report


def write_cell(results, cell, dice, with_examples=True):
    folder = results.joinpath("cells", *cell)
    folder.mkdir(parents=True)
    (folder / "best.json").write_text(json.dumps(best_doc(cell, dice, trial=1)))
    rows = [dict(model=cell[0], method=cell[1], dataset=cell[2], trial=t, state="COMPLETE", depth=t + 1,
                 test_dice_mean=dice - 0.1 * (1 - t)) for t in (0, 1)]
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)
    if cell[1] != "zeroshot":
        make_journal(folder / "study.journal", n_complete=2)
    if with_examples:
        (folder / "trials/001").mkdir(parents=True)
        np.savez(folder / "trials/001/examples.npz", **examples(k=2, ids=["t0", "t1"]))
    return folder


def test_partial_report_marks_the_missing_cell(tmp_path, capsys):
    grid = Grid(("clipseg",), ("zeroshot", "coop"), ("tissue", "ctvolumes"),
                {"tissue": "non-radiology", "ctvolumes": "radiology"})
    results = tmp_path / "results"
    values = {("clipseg", "zeroshot", "tissue"): 0.3, ("clipseg", "zeroshot", "ctvolumes"): 0.2,
              ("clipseg", "coop", "tissue"): 0.75}
    for cell, dice in values.items():
        write_cell(results, cell, dice)
    # the running cell has a journal with one finished trial but no best.json yet
    running = results / "cells/clipseg/coop/ctvolumes"
    running.mkdir(parents=True)
    make_journal(running / "study.journal", n_complete=1)
    settings = json.dumps({"models": grid.models, "methods": grid.methods, "datasets": grid.datasets,
                           "domains": grid.domains, "dpi": 50})
    out = tmp_path / "partial"
    args = ["report", "--results", str(results), "--tables", str(out / "tables/dice"),
            "--figures", str(out / "figures"), "--settings", settings]
    assert main(args) == 1
    assert "clipseg/coop/ctvolumes" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--partial"]) == 0
    assert "3/4 cells finished" in capsys.readouterr().out
    md = (out / "tables/dice.md").read_text().splitlines()
    assert md[0] == "| model · method | tissue | ctvolumes | mean |"
    assert md[2].startswith("| clipseg · zeroshot | 0.300 ± 0.100 | **0.200 ± 0.100** |")
    assert md[3].startswith("| clipseg · coop | **0.750 ± 0.100** | — | **0.750** |")
    csv = pd.read_csv(out / "tables/dice.csv", index_col=0)
    assert math.isnan(csv.loc["clipseg · coop", "ctvolumes_mean"])
    assert csv.loc["clipseg · coop", "tissue_mean"] == pytest.approx(0.75)
    domains = pd.read_csv(out / "figures/domain_dice.csv")
    coop = domains[domains["row"] == "clipseg · coop"].set_index("domain")["dice_mean"]
    assert coop["non-radiology"] == pytest.approx(0.75) and math.isnan(coop["radiology"])
    files = figure_files(out / "figures", grid)
    pngs = [files["heatmap"], files["depth"], files["domains"], *files["history"].values(),
            *files["importances"].values(), *files["qualitative"].values()]
    assert len(pngs) == 3 + 2 + 2 + 2
    for png in pngs:
        assert open(png, "rb").read(8) == PNG, png
    corr = pd.read_csv(files["correlations"])
    assert list(corr["dataset"]) == ["tissue", "pooled"] and corr.loc[0, "n"] == 2

    # the same report from the workflow's config file, written to the default <results>/partial
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "results": str(results), "report": {"dpi": 40},
        "datasets": {"tissue": {"source": "synthetic", "domain": "non-radiology"},
                     "ctvolumes": {"source": "synthetic", "domain": "radiology"}},
        "benchmark": {"models": list(grid.models), "methods": list(grid.methods), "datasets": list(grid.datasets)}}))
    assert main(["report", "--partial", "--config", str(config)]) == 0
    assert (results / "partial/tables/dice.md").read_text() == (out / "tables/dice.md").read_text()
    assert (results / "partial/figures/domain_dice.csv").read_text() == (out / "figures/domain_dice.csv").read_text()
    assert main(["report", "--partial"]) == 1 and "--config" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one palette, one dataset order


def test_a_row_has_one_colour_whatever_else_a_figure_shows():
    import seaborn as sns

    from tunevlseg.cells import Grid
    from tunevlseg.methods import METHODS
    from tunevlseg.report.figures import colours, row_palette
    from tunevlseg.report.render import grid_palette

    models = ["clipseg", "cris"]
    every = [f"{m} · {k}" for m in models for k in METHODS]
    full = row_palette(every, models)
    assert len(set(full.values())) == len(every)  # distinct
    assert row_palette(["cris · coop"], models) == {"cris · coop": full["cris · coop"]}
    assert row_palette(["clipseg · vpt", "cris · coop"])["cris · coop"] == full["cris · coop"]
    assert list(row_palette(["cris · coop", "clipseg · vpt"])) == ["cris · coop", "clipseg · vpt"]  # caller's order
    # tab20: the method's hue from the catalogue, dark for the config's first model and light for the second
    tab20 = sns.color_palette("tab20", 20)
    coop = list(METHODS).index("coop")
    assert full["clipseg · coop"] == tab20[2 * coop] and full["cris · coop"] == tab20[2 * coop + 1]
    assert row_palette(["cris · coop"], ["cris", "clipseg"])["cris · coop"] == tab20[2 * coop]
    assert "other · thing" in row_palette(["other · thing", "cris · coop"])  # outside the catalogue: still coloured
    # the report's palette of the grid reaches every figure; a figure's subset keeps the grid's colours
    palette = grid_palette(Grid(("clipseg", "cris"), ("zeroshot", "coop", "vpt"), ("a",)))
    assert colours(["cris · coop", "clipseg · vpt"], palette) == {"cris · coop": full["cris · coop"],
                                                                 "clipseg · vpt": full["clipseg · vpt"]}


def test_every_figure_takes_its_colours_and_dataset_order_from_the_one_helpers(tmp_path, monkeypatch):
    from tunevlseg.report import cost, domains, figures, ranking
    from tunevlseg.report.collect import order_datasets

    frame = pd.DataFrame({"dataset": ["zeta", "alpha", "mid", "extra"]})
    assert order_datasets(frame, ["mid", "zeta", "alpha", "unused"]) == ["mid", "zeta", "alpha", "extra"]
    assert order_datasets(frame) == ["alpha", "extra", "mid", "zeta"]
    for module in (cost, domains, ranking):  # nobody builds a palette of their own
        assert module.colours is figures.colours and not hasattr(module, "row_palette")
    titles = {}

    def keep_titles(fig, out, dpi):
        titles[Path(out).name] = [a.get_title() for a in fig.axes]
        return out

    monkeypatch.setattr(figures, "save_figure", keep_titles)
    monkeypatch.setattr(cost, "save_figure", keep_titles)
    rows = [{"model": "clipseg", "method": "coop", "dataset": d, "trial": i, "state": "COMPLETE", "depth": 1 + i % 2,
             "test_dice_mean": 0.3 + 0.1 * i, "val_dice": 0.3} for d in ("alpha", "zeta") for i in range(2)]
    figures.plot_depth_vs_dice(pd.DataFrame(rows), tmp_path / "depth.png", dpi=40, datasets=["zeta", "alpha"])
    points = pd.DataFrame({"panel": ["alpha", "zeta", cost.ALL_DATASETS], "row": ["clipseg · coop"] * 3,
                           "n_trainable": [10, 10, 10], "dice": [0.5, 0.6, 0.55], "pareto": [True, True, True]})
    cost.plot_dice_vs_params(points, tmp_path / "params.png", dpi=40, datasets=["zeta", "alpha"])
    assert titles["depth.png"][:2] == ["zeta", "alpha"]
    assert titles["params.png"][:3] == ["zeta", "alpha", cost.ALL_DATASETS]
