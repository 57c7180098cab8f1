"""The Optuna driver of one cell: failures are recorded and skipped, stale trials failed, studies resumed."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest

import tunevlseg.tune as tune
from tunevlseg.cells import checkpoints_kept
from tunevlseg.train.loop import TrialFailed
from tunevlseg.tune import CellRunner, CellSpec

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
         "depth": {"type": "int", "low": 1, "high": 2}}


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("tissue", n=24, seed=3)


def spec(model_dir, method="coop", n_trials=2) -> CellSpec:
    return CellSpec(model="clipseg", method=method, dataset="tissue", weights=str(model_dir), n_trials=n_trials,
                    search=SPACE, training={"epochs": 1, "batch_size": 8, "progress": False}, max_failed_trials=3)


def test_failed_trial_is_recorded_and_the_study_goes_on(tiny_model_dir, prepared, tmp_path, monkeypatch):
    real = tune.train_prompts
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise TrialFailed("non-finite training loss (nan)")
        return real(*args, **kwargs)

    monkeypatch.setattr(tune, "train_prompts", flaky)
    CellRunner(spec(tiny_model_dir), prepared, tmp_path).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["state"]) == ["FAIL", "COMPLETE", "COMPLETE"]
    best = json.loads((tmp_path / "best.json").read_text())
    complete = trials[trials["state"] == "COMPLETE"]
    assert best["trial"] == int(complete.loc[complete["val_dice"].idxmax(), "trial"])
    assert best["test_dice_mean"] == pytest.approx(complete["test_dice_mean"].max() if len(complete) == 1
                                                   else complete.loc[complete["val_dice"].idxmax(), "test_dice_mean"])


def test_too_many_failures_stop_the_cell_with_a_clear_error(tiny_model_dir, prepared, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TrialFailed("non-finite training loss (nan)")

    monkeypatch.setattr(tune, "train_prompts", broken)
    with pytest.raises(RuntimeError, match="3 trials failed"):
        CellRunner(spec(tiny_model_dir), prepared, tmp_path).run()
    assert not (tmp_path / "best.json").exists()


def test_a_programming_error_stops_the_job_and_leaves_the_trial_resumable(tiny_model_dir, prepared, tmp_path,
                                                                        monkeypatch):
    """Only what a trial can legitimately fail with (TrialFailed, CUDA OOM) is a FAIL; a bug stops the job."""
    def buggy(*args, **kwargs):
        raise TypeError("train_prompts() got an unexpected keyword argument 'weight_decy'")

    monkeypatch.setattr(tune, "train_prompts", buggy)
    runner = CellRunner(spec(tiny_model_dir), prepared, tmp_path)
    with pytest.raises(TypeError, match="weight_decy"):
        runner.run()
    assert [t.state.name for t in runner._study().get_trials()] == ["RUNNING"]  # no FAIL spent on a bug
    assert not (tmp_path / "best.json").exists()


def test_out_of_memory_is_a_failed_trial(tiny_model_dir, prepared, tmp_path, monkeypatch):
    import torch

    real = tune.train_prompts
    calls = {"n": 0}

    def oom_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(tune, "train_prompts", oom_once)
    CellRunner(spec(tiny_model_dir, n_trials=1), prepared, tmp_path).run()
    assert list(pd.read_csv(tmp_path / "trials.csv")["state"]) == ["FAIL", "COMPLETE"]


def test_resume_adopts_interrupted_trial_and_completes_the_budget(tiny_model_dir, prepared, tmp_path):
    runner = CellRunner(spec(tiny_model_dir, n_trials=1), prepared, tmp_path)
    runner.run()
    first = (tmp_path / "trials" / "000" / "epochs.csv").stat().st_mtime_ns
    runner._study().ask()  # a trial a killed job left RUNNING (its owner lock is free)
    CellRunner(spec(tiny_model_dir, n_trials=2), prepared, tmp_path).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["trial"]) == [0, 1] and list(trials["state"]) == ["COMPLETE", "COMPLETE"]
    assert list(trials["seed"]) == [0, 1]
    assert (tmp_path / "trials" / "001" / "best.pt").exists()
    assert not (tmp_path / "trials" / "001" / "resume.pt").exists()  # removed once the trial is recorded
    assert (tmp_path / "trials" / "000" / "epochs.csv").stat().st_mtime_ns == first  # not trained again


def test_a_trial_whose_process_keeps_dying_is_failed_and_replaced(tiny_model_dir, prepared, tmp_path):
    runner = CellRunner(spec(tiny_model_dir, n_trials=1), prepared, tmp_path)
    study = runner._study()
    crashed = study.ask()
    crashed.set_user_attr("crashes", runner.spec.max_trial_restarts)  # one more death is one too many
    runner.run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["state"]) == ["FAIL", "COMPLETE"]


def test_live_workers_trials_count_against_the_budget(tiny_model_dir, prepared, tmp_path):
    """A RUNNING trial whose owner lock is held (a live worker) is neither adopted nor duplicated."""
    from contextlib import ExitStack

    runner = CellRunner(spec(tiny_model_dir, n_trials=2), prepared, tmp_path)
    study = runner._study()
    other = study.ask()
    with runner._owner_lock(other.number):  # held by "another worker"
        with ExitStack() as owner:
            mine = runner._next_trial(study, owner)
            assert mine is not None and mine.number == 1  # the budget has room for one more
            with ExitStack() as owner2:
                assert runner._next_trial(study, owner2) is None  # 0 complete + 2 running = n_trials
    # the other worker died: its trial is free and gets adopted, not replaced
    with ExitStack() as owner:
        adopted = runner._next_trial(study, owner)
        assert adopted.number in (0, 1)


def test_zeroshot_cell_has_one_row_and_no_training(tiny_model_dir, prepared, tmp_path):
    CellRunner(spec(tiny_model_dir, method="zeroshot"), prepared, tmp_path).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == 1 and trials.loc[0, "depth"] == 0 and trials.loc[0, "n_trainable"] == 0
    per_image = pd.read_csv(tmp_path / "trials" / "000" / "test_metrics.csv")
    assert trials.loc[0, "test_dice_mean"] == pytest.approx(per_image["dice"].mean())
    assert not (tmp_path / "study.journal").exists()


def test_search_space_types():
    trial = optuna.trial.FixedTrial({"lr": 0.002, "depth": 3, "h": 64})
    params = tune.suggest(trial, {"lr": SPACE["lr"], "depth": {"type": "int", "low": 1, "high": 5},
                                  "h": {"type": "categorical", "choices": [32, 64]}})
    assert params == {"lr": 0.002, "depth": 3, "h": 64}
    with pytest.raises(ValueError, match="unknown type"):
        tune.suggest(trial, {"lr": {"type": "uniform"}})


def test_unknown_training_key_fails_before_any_trial(tiny_model_dir, prepared, tmp_path):
    bad = spec(tiny_model_dir)
    bad.training = {**bad.training, "epoch": 3}
    with pytest.raises(ValueError, match=r"unknown training settings \['epoch'\]"):
        CellRunner(bad, prepared, tmp_path)
    assert not (tmp_path / "study.journal").exists()


def test_finetune_trains_every_weight_from_fresh_weights(tiny_model_dir, prepared, tmp_path):
    import torch

    finetune = spec(tiny_model_dir, method="finetune", n_trials=2)
    finetune.search = {"lr": SPACE["lr"]}
    runner = CellRunner(finetune, prepared, tmp_path)
    before = {k: v.clone() for k, v in runner.adapter.model.state_dict().items()}
    n_weights = sum(p.numel() for p in runner.adapter.model.parameters())
    runner.run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"]
    assert (trials["n_trainable"] == n_weights).all() and (trials["depth"] == 0).all()
    # the cell's own model is untouched: each trial trained a freshly loaded copy
    after = runner.adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    best = json.loads((tmp_path / "best.json").read_text())["trial"]
    saved = torch.load(tmp_path / "trials" / f"{best:03d}" / "best.pt", weights_only=True)
    assert sum(v.numel() for v in saved.values()) == n_weights


def test_finetune_keeps_the_full_checkpoint_of_the_selected_trial_only_and_still_resumes(tiny_model_dir, prepared,
                                                                                        tmp_path, monkeypatch):
    """A full-model best.pt is released once the study has moved past its trial; an interrupted trial's
    state is untouched and the trial resumes; the released trials keep their metrics and examples."""
    import signal

    from tunevlseg import preempt

    finetune = spec(tiny_model_dir, method="finetune", n_trials=3)
    finetune.search = {"lr": SPACE["lr"]}
    finetune.training = {**finetune.training, "epochs": 2, "early_stopping_patience": 5}
    real, stop = tune.train_prompts, {"trial": "002"}

    def stopped_after_one_epoch(*args, on_epoch=None, **kwargs):
        def hook(history):
            if args[5].path.name == stop.get("trial") and stop.pop("trial"):
                raise preempt.Preempted(signal.SIGTERM)  # e.g. SLURM preempts the job after epoch 0
            return on_epoch(history) if on_epoch else False
        return real(*args, on_epoch=hook, **kwargs)

    monkeypatch.setattr(tune, "train_prompts", stopped_after_one_epoch)
    with pytest.raises(preempt.Preempted):
        CellRunner(finetune, prepared, tmp_path).run()
    trials = [tmp_path / "trials" / f"{n:03d}" for n in range(3)]
    assert (trials[2] / "resume.pt").is_file() and (trials[2] / "best.pt").is_file()  # the running trial: kept
    assert [(t / "best.pt").is_file() for t in trials[:2]].count(True) == 1  # of two finished: the better one
    before = pd.read_csv(trials[2] / "epochs.csv")
    CellRunner(finetune, prepared, tmp_path).run()
    frame = pd.read_csv(tmp_path / "trials.csv")
    assert list(frame["state"]) == ["COMPLETE"] * 3 and frame["epochs_run"].tolist() == [2, 2, 2]
    after = pd.read_csv(trials[2] / "epochs.csv")
    pd.testing.assert_frame_equal(after.iloc[:1], before)  # resumed after its saved epoch, not retrained
    best = json.loads((tmp_path / "best.json").read_text())["trial"]
    assert best == int(frame.loc[frame["val_dice"].idxmax(), "trial"])
    assert [(t / "best.pt").is_file() for t in trials] == [n == best for n in range(3)]
    assert all((t / "examples.npz").is_file() and (t / "test_metrics.csv").is_file() for t in trials)
    # a seed replicate keeps its full weights (weight_decay neither searched nor fixed: the trials' default, 0)
    replicate = CellRunner(finetune, prepared, tmp_path).retrain_replicate(1)
    assert replicate["status"] == "ok" and (tmp_path / "seeds" / "1" / "best.pt").is_file()
    assert replicate["params"]["weight_decay"] is None
    assert len(list(tmp_path.rglob("best.pt"))) == checkpoints_kept("finetune", n_trials=3, final_seeds=2) == 2
    assert checkpoints_kept("finetune", n_trials=20, final_seeds=3) == 3  # the paper grid: 3 instead of 22
    assert checkpoints_kept("coop", n_trials=20, final_seeds=3) == 22 and checkpoints_kept("zeroshot", 20, 3) == 0
    # prompt methods keep every trial's (tiny) checkpoint
    CellRunner(spec(tiny_model_dir, n_trials=2), prepared, tmp_path / "coop").run()
    assert all((tmp_path / "coop" / "trials" / f"{n:03d}" / "best.pt").is_file() for n in range(2))


def test_storage_url_keeps_the_study_out_of_the_cell_folder(tiny_model_dir, prepared, tmp_path):
    db = tmp_path / "studies.db"
    cell = spec(tiny_model_dir, n_trials=1)
    cell.storage = f"sqlite:///{db}"  # one worker only: SQLite must not be shared by parallel workers
    CellRunner(cell, prepared, tmp_path / "cell").run()
    assert (pd.read_csv(tmp_path / "cell" / "trials.csv")["state"] == "COMPLETE").sum() == 1
    assert not (tmp_path / "cell" / "study.journal").exists()
    study = tune.load_cell_study(tmp_path / "cell", storage=cell.storage)
    assert study.study_name.startswith("clipseg.coop.tissue.")  # + the fingerprint: a database keeps old studies
    assert [t.state.name for t in study.trials] == ["COMPLETE"]


def test_error_caused_by_a_stop_signal_leaves_the_trial_resumable(tiny_model_dir, prepared, tmp_path, monkeypatch):
    """SLURM signals every process of a job: a DataLoader worker dying first must not fail the trial."""
    import os
    import signal

    from tunevlseg import preempt

    def dies_with_its_workers(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise RuntimeError("DataLoader worker (pid 1234) exited unexpectedly")

    monkeypatch.setattr(tune, "train_prompts", dies_with_its_workers)
    runner = CellRunner(spec(tiny_model_dir, n_trials=1), prepared, tmp_path)
    with preempt.stop_on_signals(), pytest.raises(preempt.Preempted, match="SIGTERM"):
        runner.run()
    trials = runner._study().get_trials()
    assert [t.state.name for t in trials] == ["RUNNING"] and trials[0].user_attrs["preempted"] is True
    assert not (tmp_path / "trials.csv").exists()
