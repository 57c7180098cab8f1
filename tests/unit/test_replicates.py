"""Seed replicates that fail: recorded, counted missing by the report, retried with the next seed of their
stream; a replicate refuses a study of other settings (tunevlseg.tune, tunevlseg.report.collect)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

import tunevlseg.train.loop as loop
from tunevlseg.cells import CellFiles
from tunevlseg.cli import run_local
from tunevlseg.tune import RETRY_SEED_STRIDE, CellRunner, CellSpec, replicate_seed

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "depth": {"type": "int", "low": 1, "high": 2}}


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("tissue", n=24, seed=3)


def spec(model_dir, epochs=1) -> CellSpec:
    return CellSpec(model="clipseg", method="coop", dataset="tissue", weights=str(model_dir), n_trials=1, seed=2,
                    search=SPACE, training={"epochs": epochs, "batch_size": 8, "progress": False})


def nan_loss_for(monkeypatch, bad_seed: int) -> dict:
    """The real training loop with a loss that is NaN when training with ``bad_seed`` (a deterministic NaN)."""
    real, seen = loop.make_loss, {"seeds": []}

    def make_loss(settings):
        loss = real(settings)
        seen["seeds"].append(settings.seed)
        return (lambda *a, **k: loss(*a, **k) * float("nan")) if settings.seed == bad_seed else loss

    monkeypatch.setattr(loop, "make_loss", make_loss)
    return seen


def aggregate(cell, out, final_seeds=2) -> pd.DataFrame:
    seeds = [CellFiles(str(cell)).seed(r).result_json for r in range(final_seeds)]
    assert run_local(["aggregate", "--best", str(cell / "best.json"), "--replicates", *seeds,
                      "--tables", str(out / "dice"), "--figures", str(out / "figures"),
                      "--settings", json.dumps({"final_seeds": final_seeds, "dpi": 30})]) == 0
    return pd.read_csv(out / "dice.csv", index_col="row")


def test_a_failed_replicate_is_recorded_marked_missing_and_retried_with_its_next_seed(
        tiny_model_dir, prepared, tmp_path, monkeypatch, caplog, capsys):
    cell = tmp_path / "cell"
    runner = CellRunner(spec(tiny_model_dir), prepared, cell)
    runner.run()
    first = replicate_seed(2, 1)
    assert first == 2501
    seen = nan_loss_for(monkeypatch, first)
    with caplog.at_level(logging.WARNING):
        failed = runner.retrain_replicate(1)
    files = CellFiles(str(cell)).seed(1)
    assert failed["status"] == "failed" and failed["seed"] == first and failed["attempt"] == 0
    assert "non-finite training loss (nan)" in failed["error"] and failed["next_seed"] == first + RETRY_SEED_STRIDE
    assert json.loads(open(files.result_json).read()) == failed  # a finished output, not a half-written one
    assert pd.read_csv(files.test_metrics_csv).empty and not files.resume.exists()
    message = caplog.text
    assert f"{cell}: seed replicate 1 (seed 2501) failed: TrialFailed: non-finite training loss" in message
    assert f"tunevlseg retry-failed {cell}" in message and f"next seed of its stream ({first + RETRY_SEED_STRIDE})" \
        in message
    # a rerun does not train the same seed again
    assert runner.retrain_replicate(1) == failed and seen["seeds"] == [first]

    # the table marks the cell: 1 of 2 replicates has results
    table = aggregate(cell, tmp_path / "before")
    row = table.loc["clipseg · coop"]
    assert row["n_seeds"] == 1 and row["n_seeds_expected"] == 2
    assert "(1/2 seeds)" in (tmp_path / "before" / "dice.md").read_text()

    # retry-failed sets the attempt aside; the next run retrains with the next seed and succeeds
    assert run_local(["retry-failed", str(cell)]) == 0
    assert f"seed replicate 1 (seed {first}: TrialFailed" in capsys.readouterr().out
    assert not files.path.joinpath("result.json").exists() and not files.path.joinpath("test_metrics.csv").exists()
    assert json.loads(files.failed_attempt(0).read_text())["seed"] == first
    retried = runner.retrain_replicate(1)
    assert retried["status"] == "ok" and retried["seed"] == first + RETRY_SEED_STRIDE and retried["attempt"] == 1
    assert retried["failed_seeds"] == [first] and seen["seeds"] == [first, first + RETRY_SEED_STRIDE]
    assert len(pd.read_csv(files.test_metrics_csv)) == retried["n_test"] > 0
    table = aggregate(cell, tmp_path / "after")
    assert table.loc["clipseg · coop", "n_seeds"] == 2
    assert "seeds)" not in (tmp_path / "after" / "dice.md").read_text()


def test_a_never_run_replicate_is_marked_missing_too(tiny_model_dir, prepared, tmp_path, caplog):
    from tunevlseg.report.collect import replicate_counts, replicate_results

    cell = tmp_path / "cell"
    CellRunner(spec(tiny_model_dir), prepared, cell).run()
    cells = {("clipseg", "coop", "tissue"): cell, ("clipseg", "zeroshot", "tissue"): tmp_path / "zs"}
    with caplog.at_level(logging.WARNING):
        counts = replicate_counts(cells, replicate_results(cells), final_seeds=3).set_index("method")
    assert (counts.loc["coop", "n_seeds"], counts.loc["coop", "n_seeds_expected"]) == (1, 3)
    assert counts.loc["coop", "missing"] == "replicate 1 not run; replicate 2 not run"
    assert counts.loc["zeroshot", "n_seeds_expected"] == 1  # untuned: one replicate
    assert f"{cell}: 1 of 3 seed replicates have results" in caplog.text


def test_retrain_refuses_a_study_of_other_settings(tiny_model_dir, prepared, tmp_path):
    cell = tmp_path / "cell"
    CellRunner(spec(tiny_model_dir), prepared, cell).run()
    with pytest.raises(ValueError) as err:
        CellRunner(spec(tiny_model_dir, epochs=2), prepared, cell).retrain_replicate(1)
    message = str(err.value)
    assert message.startswith(f"{cell}: the cell's study was made with other settings (changed: training.epochs)")
    assert "\n" not in message and "tunevlseg tune" in message
    assert not (cell / "seeds" / "1").exists()  # nothing trained or written
    with pytest.raises(FileNotFoundError, match=r"no study here .*fingerprint.json missing"):
        CellRunner(spec(tiny_model_dir), prepared, tmp_path / "empty").retrain_replicate(1)
