"""Pruning: the loop's per-epoch hook, Optuna's pruners in a cell's study, PRUNED trials in trials.csv."""

from __future__ import annotations

import json
import warnings

import optuna
import pandas as pd
import pytest
import torch

import tunevlseg.tune as tune
from tunevlseg.data.cache import PreparedSplit
from tunevlseg.prompts import build_learner
from tunevlseg.train.checkpoint import save_trainable
from tunevlseg.train.loop import TrainResult, TrainSettings, train_prompts
from tunevlseg.train.pruning import EpochReporter, make_pruner, objective_value
from tunevlseg.tune import CellRunner, CellSpec

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "depth": {"type": "int", "low": 1, "high": 2}}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("tissue", n=24, seed=3)


def _train(tiny_adapter, prepared, folder, on_epoch, epochs=4, depth=1):
    torch.manual_seed(0)
    learner = build_learner("coop", tiny_adapter.dims, depth=depth)
    settings = TrainSettings.from_dict({"epochs": epochs, "batch_size": 8, "progress": False, "amp": False,
                                        "early_stopping_patience": epochs})
    return train_prompts(tiny_adapter, learner, PreparedSplit(prepared, "train"), PreparedSplit(prepared, "val"),
                         settings, folder, CPU, on_epoch=on_epoch)


def test_hook_stops_training_and_the_stop_survives_a_rerun(tiny_adapter, prepared, tmp_path):
    seen = []

    def stop_after_second(history):
        seen.append(len(history))
        return len(history) == 2

    result = _train(tiny_adapter, prepared, tmp_path, stop_after_second)
    assert result.pruned and result.epochs_run == 2 and seen == [1, 2]
    assert len(pd.read_csv(tmp_path / "epochs.csv")) == 2
    mtime = (tmp_path / "best.pt").stat().st_mtime_ns
    again = _train(tiny_adapter, prepared, tmp_path, stop_after_second)  # e.g. killed before the study heard of it
    assert again.pruned and again.epochs_run == 2 and seen == [1, 2]  # decided once, not asked again
    assert (tmp_path / "best.pt").stat().st_mtime_ns == mtime  # not trained again


def test_hook_is_not_asked_after_the_last_epoch_and_is_asked_again_after_resuming(tiny_adapter, prepared, tmp_path):
    seen = []
    result = _train(tiny_adapter, prepared, tmp_path, lambda h: seen.append(len(h)) or False, epochs=3)
    assert not result.pruned and result.epochs_run == 3 and seen == [1, 2]  # epoch 3 ends training anyway
    # a trial killed after its first epoch: the resumed run first asks about the restored epoch, then goes on
    one = tmp_path / "one"
    _train(tiny_adapter, prepared, one, lambda h: False, epochs=1)
    state = torch.load(one / "resume.pt", weights_only=True)
    state["progress"]["done"] = False  # as if the trial had 3 epochs and was killed after the first
    torch.save(state, one / "resume.pt")
    seen.clear()
    resumed = _train(tiny_adapter, prepared, one, lambda h: seen.append(len(h)) or False, epochs=3)
    assert seen == [1, 2] and resumed.epochs_run == 3


def test_reported_value_is_the_objective_so_far():
    history = [dict(epoch=0, val_dice=0.3, val_loss=0.9), dict(epoch=1, val_dice=0.2, val_loss=0.7)]
    assert objective_value(history, "best_val_dice") == 0.3
    assert objective_value(history, "last_val_loss") == 0.7


def test_pruners_by_name():
    assert isinstance(make_pruner("none", 20), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("median", 20), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband", 20), optuna.pruners.HyperbandPruner)
    with pytest.raises(ValueError, match="tuning.pruner must be one of"):
        make_pruner("asha", 20)


#: validation Dice per epoch of consecutive trials (the fake training below plays them)
CURVES = [[0.5, 0.6, 0.7, 0.7], [0.1, 0.1, 0.1, 0.1], [0.8, 0.85, 0.9, 0.9], [0.7, 0.8, 0.85, 0.9]]


def _fake_training(monkeypatch, calls):
    """train_prompts that plays CURVES[trial] through the real on_epoch hook (EpochReporter + the study's pruner)."""
    def fake(adapter, learner, train, val, settings, files, device=None, features=None, on_epoch=None):
        curve = CURVES[int(files.path.name)]
        calls.append(int(files.path.name))
        history = []
        for epoch, dice in enumerate(curve):
            history.append(dict(epoch=epoch, train_loss=1.0, val_loss=1.0 - dice, val_dice=dice, lr=1e-3, seconds=0))
            files.path.mkdir(parents=True, exist_ok=True)
            save_trainable(learner, files.checkpoint)
            if epoch + 1 < len(curve) and on_epoch(history):
                return TrainResult(max(h["val_dice"] for h in history), 0, 1 - dice, len(history), history, True)
        return TrainResult(max(curve), len(curve) - 1, 1 - curve[-1], len(curve), history)

    monkeypatch.setattr(tune, "train_prompts", fake)


def _spec(model_dir, pruner, n_trials=4) -> CellSpec:
    return CellSpec(model="clipseg", method="coop", dataset="tissue", weights=str(model_dir), n_trials=n_trials,
                    search=SPACE, training={"epochs": 4, "batch_size": 8, "progress": False}, pruner=pruner,
                    pruner_startup_trials=1, pruner_warmup_epochs=0)


def test_median_pruner_prunes_the_hopeless_trial_and_pruned_trials_count(tiny_model_dir, prepared, tmp_path,
                                                                        monkeypatch):
    calls = []
    _fake_training(monkeypatch, calls)
    CellRunner(_spec(tiny_model_dir, "median"), prepared, tmp_path).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"]  # exactly n_trials finished
    pruned = trials.iloc[1]
    assert pruned["epochs_run"] == 1 and pruned["val_dice"] == pytest.approx(0.1)
    assert pd.isna(pruned["test_dice_mean"])  # no test evaluation
    assert not (tmp_path / "trials" / "001" / "test_metrics.csv").exists()
    assert list(trials["epochs_run"]) == [4, 1, 4, 4] and calls == [0, 1, 2, 3]
    study = CellRunner(_spec(tiny_model_dir, "median"), prepared, tmp_path)._study()
    assert study.trials[1].intermediate_values == {0: pytest.approx(0.1)}
    assert study.trials[0].intermediate_values == {0: 0.5, 1: 0.6, 2: 0.7}  # not the epoch that ended training
    assert json.loads((tmp_path / "best.json").read_text())["trial"] == 2


def test_without_a_pruner_every_trial_trains_to_its_end(tiny_model_dir, prepared, tmp_path, monkeypatch):
    calls = []
    _fake_training(monkeypatch, calls)
    CellRunner(_spec(tiny_model_dir, "none"), prepared, tmp_path).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert (trials["state"] == "COMPLETE").all() and list(trials["epochs_run"]) == [4, 4, 4, 4]


def test_raising_n_trials_after_pruning_continues_the_study(tiny_model_dir, prepared, tmp_path, monkeypatch):
    calls = []
    _fake_training(monkeypatch, calls)
    CellRunner(_spec(tiny_model_dir, "median", n_trials=2), prepared, tmp_path).run()
    CellRunner(_spec(tiny_model_dir, "median", n_trials=3), prepared, tmp_path).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE", "PRUNED", "COMPLETE"] and calls == [0, 1, 2]


def test_a_pruning_decision_taken_before_a_kill_is_kept(tiny_model_dir, tiny_adapter, prepared, tmp_path):
    """The process died after the pruner stopped trial 0 but before the study recorded it: the rerun adopts
    the trial, finds the stop in its resume state and records it PRUNED without training again."""
    spec = _spec(tiny_model_dir, "median", n_trials=1)
    runner = CellRunner(spec, prepared, tmp_path)
    study = runner._study()
    left_running = study.ask()  # trial 0, RUNNING, owner lock free
    params = tune.suggest(left_running, SPACE)
    files = runner.files.trial(0)
    result = _train(tiny_adapter, prepared, files.path, lambda h: True, depth=params["depth"])
    assert result.pruned
    mtime = files.checkpoint.stat().st_mtime_ns
    CellRunner(spec, prepared, tmp_path).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["state"]) == ["PRUNED"]  # it counts towards n_trials = 1: nothing else runs
    assert files.checkpoint.stat().st_mtime_ns == mtime and trials.loc[0, "epochs_run"] == 1


def test_epoch_reporter_does_not_report_an_epoch_twice(tmp_path):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    reporter = EpochReporter(trial, "best_val_dice")
    history = [dict(epoch=0, val_dice=0.2, val_loss=1.0)]
    assert reporter(history) is False
    history.append(dict(epoch=1, val_dice=0.4, val_loss=0.9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns on a repeated step
        assert reporter(history) is False
    assert study.trials[0].intermediate_values == {0: 0.2, 1: 0.4}
