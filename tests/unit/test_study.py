"""A cell's study follows its settings: fingerprints, superseded studies, failure budget, environment faults,
the journal's torn last line, seed replicates (tunevlseg.tune / tunevlseg.study)."""

from __future__ import annotations

import errno
import json
import logging

import pandas as pd
import pytest

import tunevlseg.tune as tune
from tunevlseg.cells import CellFiles
from tunevlseg.study import repair_journal
from tunevlseg.train.loop import TrialFailed
from tunevlseg.tune import CellRunner, CellSpec, EnvironmentFault, load_cell_study, retry_failed

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "depth": {"type": "int", "low": 1, "high": 2}}


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("tissue", n=24, seed=3)


def spec(model_dir, n_trials=2, search=SPACE, **kw) -> CellSpec:
    return CellSpec(model="clipseg", method="coop", dataset="tissue", weights=str(model_dir), n_trials=n_trials,
                    search=search, training={"epochs": 1, "batch_size": 8, "progress": False}, **kw)


def test_changed_settings_start_a_fresh_study_and_keep_the_old_one_aside(tiny_model_dir, prepared, tmp_path,
                                                                         caplog):
    CellRunner(spec(tiny_model_dir), prepared, tmp_path).run()
    old = pd.read_csv(tmp_path / "trials.csv")
    narrow = {**SPACE, "lr": {"type": "float", "low": 1e-4, "high": 2e-4, "log": True}}
    with caplog.at_level(logging.WARNING):
        CellRunner(spec(tiny_model_dir, search=narrow), prepared, tmp_path).run()
    new = pd.read_csv(tmp_path / "trials.csv")
    assert len(new) == 2 and new["lr"].between(1e-4, 2e-4).all()  # the new trials, none of the old ones
    assert not old["lr"].between(1e-4, 2e-4).any()
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["cell"]["search"]["lr"]["high"] == 2e-4
    fingerprint = json.loads((tmp_path / "fingerprint.json").read_text())
    assert provenance["fingerprint"] == fingerprint["fingerprint"]
    aside = list((tmp_path / "superseded").iterdir())
    assert len(aside) == 1 and pd.read_csv(aside[0] / "trials.csv").equals(old)
    assert (aside[0] / "study.journal").is_file() and (aside[0] / "trials" / "000" / "best.pt").is_file()
    assert "search.lr.high" in caplog.text and "search.lr.low" in caplog.text and str(aside[0]) in caplog.text


def test_other_training_settings_or_data_change_the_fingerprint_but_n_trials_does_not(tiny_model_dir, prepared,
                                                                                      make_prepared, tmp_path):
    def digest(s, data=prepared):
        return CellRunner(s, data, tmp_path).fingerprint()[0]

    base = digest(spec(tiny_model_dir))
    assert digest(spec(tiny_model_dir, n_trials=7)) == base
    more_epochs = spec(tiny_model_dir)
    more_epochs.training = {**more_epochs.training, "epochs": 2}
    assert digest(more_epochs) != base
    quiet = spec(tiny_model_dir)
    quiet.training = {**quiet.training, "progress": True, "num_workers": 0}  # run-only settings
    assert digest(quiet) == base
    assert digest(spec(tiny_model_dir, prompt_key="p2")) != base
    assert digest(spec(tiny_model_dir), make_prepared("tissue", n=20, seed=4)) != base


def test_a_stuck_cell_says_what_to_do_and_retry_failed_unsticks_it(tiny_model_dir, prepared, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TrialFailed("non-finite training loss (nan)")

    monkeypatch.setattr(tune, "train_prompts", broken)
    with pytest.raises(RuntimeError, match=r"2 trials failed.*non-finite.*tunevlseg retry-failed") as err:
        CellRunner(spec(tiny_model_dir, max_failed_trials=2), prepared, tmp_path).run()
    assert str(tmp_path) in str(err.value)
    monkeypatch.undo()  # "the cause is fixed"
    with pytest.raises(RuntimeError, match="2 trials failed"):  # still stuck: the failures count
        CellRunner(spec(tiny_model_dir, max_failed_trials=2), prepared, tmp_path).run()
    assert retry_failed(tmp_path) == [0, 1]
    CellRunner(spec(tiny_model_dir, max_failed_trials=2), prepared, tmp_path).run()
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["state"]) == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials.loc[0, "error"].startswith("TrialFailed: non-finite")


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 6464"),
                                   PermissionError(errno.EACCES, "Permission denied")])
def test_an_environment_fault_stops_the_job_and_costs_no_failure(tiny_model_dir, prepared, tmp_path, monkeypatch,
                                                                  fault):
    def full_disk(*args, **kwargs):
        raise fault

    monkeypatch.setattr(tune, "train_prompts", full_disk)
    runner = CellRunner(spec(tiny_model_dir, n_trials=1), prepared, tmp_path)
    with pytest.raises(EnvironmentFault, match="stopped by the machine.*rerun"):
        runner.run()
    (trial,) = load_cell_study(tmp_path).get_trials()
    assert trial.state.name == "RUNNING" and trial.user_attrs["preempted"] is True
    monkeypatch.undo()
    CellRunner(spec(tiny_model_dir, n_trials=1), prepared, tmp_path).run()
    (trial,) = load_cell_study(tmp_path).get_trials()
    assert trial.state.name == "COMPLETE" and trial.user_attrs["crashes"] == 0  # resumed, not counted


def test_a_misspelt_hyper_parameter_fails_before_any_trial(tiny_model_dir, prepared, tmp_path):
    bad = spec(tiny_model_dir, search={**SPACE, "weight_decy": {"type": "float", "low": 1e-5, "high": 1e-3}})
    with pytest.raises(ValueError, match=r"methods.coop.search: unknown hyper-parameter\(s\) \['weight_decy'\]"):
        CellRunner(bad, prepared, tmp_path)
    assert not (tmp_path / "study.journal").exists()


def test_a_torn_last_journal_line_is_cut_off_and_a_damaged_one_is_named(tiny_model_dir, prepared, tmp_path, caplog):
    CellRunner(spec(tiny_model_dir, n_trials=1), prepared, tmp_path).run()
    journal = tmp_path / "study.journal"
    intact = journal.read_bytes()
    journal.write_bytes(intact + b'{"op_code": 4, "worker_id": "x", "trial_id": 0, "us')  # power loss mid-write
    with caplog.at_level(logging.WARNING):
        CellRunner(spec(tiny_model_dir, n_trials=2), prepared, tmp_path).run()
    assert f"{journal}: the last line is torn" in caplog.text
    assert journal.read_bytes().startswith(intact)
    assert list(pd.read_csv(tmp_path / "trials.csv")["state"]) == ["COMPLETE", "COMPLETE"]
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:2] + [b"{not json}\n"] + lines[2:]))
    with pytest.raises(ValueError, match=rf"{journal}: line 3 of the Optuna journal is damaged"):
        repair_journal(journal)


def test_seed_replicates_retrain_the_best_configuration(tiny_model_dir, prepared, tmp_path):
    runner = CellRunner(spec(tiny_model_dir, n_trials=2), prepared, tmp_path)
    runner.run()
    best = json.loads((tmp_path / "best.json").read_text())
    files = CellFiles(str(tmp_path))
    zero = json.loads(open(files.seed(0).result_json).read())
    assert zero["trial"] == best["trial"] and zero["replicate"] == 0 and zero["model"] == "clipseg"
    pd.testing.assert_frame_equal(pd.read_csv(files.seed(0).test_metrics_csv),
                                  pd.read_csv(files.trial(best["trial"]).test_metrics))
    one = runner.retrain_replicate(1)
    assert one["seed"] == 0 * 1000 + tune.REPLICATE_SEED_OFFSET + 1 and one["params"]["depth"] == best["params"]["depth"]
    assert one["params"]["lr"] == best["params"]["lr"] and one["n_trainable"] == 4 * 24 * one["depth"]  # n·width·d
    per_image = pd.read_csv(files.seed(1).test_metrics_csv)
    assert len(per_image) == best["n_test"] and per_image["dice"].mean() == pytest.approx(one["test_dice_mean"])
    trained = files.seed(1).epochs_csv.stat().st_mtime_ns
    again = runner.retrain_replicate(1)  # finished: not trained again
    assert again == json.loads(open(files.seed(1).result_json).read()) and again["seed"] == one["seed"]
    assert files.seed(1).epochs_csv.stat().st_mtime_ns == trained
    with pytest.raises(ValueError, match="replicate 0 is the best trial"):
        runner.retrain_replicate(0)


def test_a_new_setting_with_its_default_keeps_finished_studies_and_a_changed_value_supersedes(
        tiny_model_dir, prepared, tmp_path, monkeypatch, caplog):
    """The fingerprint policy, both directions: an upgrade that adds a training setting whose default keeps
    the old behaviour leaves a finished study in place (raising n_trials adds trials, none retrained);
    setting that new key to another value supersedes the study."""
    import dataclasses

    from tunevlseg.train import loop

    CellRunner(spec(tiny_model_dir, n_trials=1), prepared, tmp_path).run()
    first = pd.read_csv(tmp_path / "trials.csv")

    @dataclasses.dataclass
    class Upgraded(loop.TrainSettings):  # a code upgrade: one more setting, its default the old behaviour
        bar_probe_setting: int = 0

    monkeypatch.setattr(tune, "TrainSettings", Upgraded)
    with caplog.at_level(logging.WARNING):
        CellRunner(spec(tiny_model_dir, n_trials=2), prepared, tmp_path).run()
    after = pd.read_csv(tmp_path / "trials.csv")
    assert not (tmp_path / "superseded").exists() and "settings changed" not in caplog.text
    assert len(after) == 2 and after.iloc[:1].drop(columns="duration_s").equals(first.drop(columns="duration_s"))

    changed = spec(tiny_model_dir, n_trials=2)
    changed.training = {**changed.training, "bar_probe_setting": 3}
    with caplog.at_level(logging.WARNING):
        CellRunner(changed, prepared, tmp_path).run()
    assert len(list((tmp_path / "superseded").iterdir())) == 1
    assert "training.bar_probe_setting" in caplog.text


def test_fingerprints_carry_the_version_and_only_non_default_training_settings(tiny_model_dir, prepared, tmp_path):
    _, components = CellRunner(spec(tiny_model_dir), prepared, tmp_path).fingerprint()
    assert components["version"] == tune.FINGERPRINT_VERSION
    assert components["training"] == {"epochs": 1, "batch_size": 8}  # progress is run-only; the rest defaults
