"""SIGTERM and parallel workers of `tunevlseg tune`, run as real subprocesses on a tiny cell (CPU, one thread).

kill -9 under Snakemake (and SIGTERM with Snakemake's retries) is tested end to end in
tests/integration/test_interrupted_workflow.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend


EPOCHS = 8
SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "depth": {"type": "int", "low": 1, "high": 2}}


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("tissue", n=40, seed=5)


def settings(model_dir: Path, n_trials: int = 2) -> str:
    return json.dumps(dict(model="clipseg", method="coop", dataset="tissue", weights=str(model_dir), n_trials=n_trials,
                           seed=3, device="cpu", search=SPACE,
                           training={"epochs": EPOCHS, "batch_size": 4, "progress": False,
                                     "early_stopping_patience": EPOCHS, "amp": False}))


def tune_cmd(prepared: Path, out: Path, model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tunevlseg.cli", "tune", "--prepared", str(prepared), "--out", str(out),
            "--threads", "1", "--settings", settings(model_dir), *extra]


def run_tune(prepared, out, model_dir) -> subprocess.CompletedProcess:
    done = subprocess.run(tune_cmd(prepared, out, model_dir), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def start_and_wait_for_epoch(prepared, out, model_dir, trial: int, epoch: int) -> subprocess.Popen:
    """Start the CLI and return once ``trial`` has saved the state of ``epoch`` (mid-trial)."""
    proc = subprocess.Popen(tune_cmd(prepared, out, model_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    state = out / "trials" / f"{trial:03d}" / "resume.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if state.is_file() and _next_epoch(state) >= epoch + 1:
            return proc
        assert proc.poll() is None, f"tune exited before trial {trial} epoch {epoch}: {proc.communicate()[1][-2000:]}"
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for the trial's state")


def _next_epoch(state: Path) -> int:
    try:
        return torch.load(state, weights_only=True)["progress"]["next_epoch"]
    except Exception:  # noqa: BLE001 (read while being replaced)
        return -1


def journal_trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name="clipseg.coop.tissue", storage=storage).get_trials()


def comparable(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "trials.csv").drop(columns=["duration_s", "peak_mem_mb"])


@pytest.fixture(scope="module")
def uninterrupted(prepared, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_tune(prepared, out, tiny_model_dir)
    return out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_state_exits_nonzero_and_the_retry_resumes(prepared, tiny_model_dir, uninterrupted,
                                                                       tmp_path, signum):
    """SIGTERM (SLURM) and SIGINT (Ctrl-C) are clean stops: resumable, not counted as a crash."""
    proc = start_and_wait_for_epoch(prepared, tmp_path, tiny_model_dir, trial=0, epoch=1)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr[-2000:]
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "rerun to resume" in stderr
    assert not (tmp_path / "trials.csv").exists() and not (tmp_path / "best.json").exists()
    trials = journal_trials(tmp_path)
    assert [t.state.name for t in trials] == ["RUNNING"] and trials[0].user_attrs["preempted"] is True
    saved_epoch = _next_epoch(tmp_path / "trials/000/resume.pt")
    assert 2 <= saved_epoch < EPOCHS
    before = pd.read_csv(tmp_path / "trials/000/epochs.csv")
    run_tune(prepared, tmp_path, tiny_model_dir)
    pd.testing.assert_frame_equal(comparable(tmp_path), comparable(uninterrupted))
    resumed = journal_trials(tmp_path)[0]
    assert resumed.user_attrs["crashes"] == 0  # a clean stop does not count towards max_trial_restarts
    after = pd.read_csv(tmp_path / "trials/000/epochs.csv")
    assert len(after) == EPOCHS
    # the epochs saved before the stop were not trained again (their recorded timings are the saved ones)
    n = min(len(before), saved_epoch)
    pd.testing.assert_frame_equal(after.iloc[:n], before.iloc[:n])


def test_two_workers_share_one_study_and_complete_exactly_n_trials(prepared, tiny_model_dir, tmp_path):
    n_trials = 3
    cmds = [tune_cmd(prepared, tmp_path, tiny_model_dir, "--worker", str(i), "--marker", str(tmp_path / f"w{i}.json"))
            for i in range(2)]
    for cmd in cmds:
        cmd[cmd.index("--settings") + 1] = settings(tiny_model_dir, n_trials=n_trials)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in cmds]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    assert not (tmp_path / "trials.csv").exists()  # workers write no cell outputs
    ran = [json.loads((tmp_path / f"w{i}.json").read_text())["ran"] for i in range(2)]
    assert sorted(ran[0] + ran[1]) == list(range(n_trials))
    states = [t.state.name for t in journal_trials(tmp_path)]
    assert states == ["COMPLETE"] * n_trials
    # the finishing step (the same command without --worker) has nothing left to train
    finish = tune_cmd(prepared, tmp_path, tiny_model_dir)
    finish[finish.index("--settings") + 1] = settings(tiny_model_dir, n_trials=n_trials)
    done = subprocess.run(finish, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials["trial"]) == list(range(n_trials)) and (trials["state"] == "COMPLETE").all()
    assert trials["seed"].is_unique
    assert len(journal_trials(tmp_path)) == n_trials
