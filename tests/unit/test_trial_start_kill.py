"""kill -9 at every point of a trial's start, then a rerun: the rerun finishes promptly, exactly ``n_trials`` trials
complete, and the table equals an uninterrupted run's (a trial killed between its parameter writes resumes with
the same parameters). Real subprocesses of `tunevlseg tune` on a tiny cell, started like Snakemake starts them:
from the workflow's folder with a relative ``--out``. Also: the journal lock is freed by a holder's death and
its wait ends on a stop signal; a stale Optuna lock of an earlier version is removed (tunevlseg.study).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._storage import JournalOperation as Op

from tunevlseg import preempt, study
from tunevlseg.study import STOP_WAIT_S, JournalLock

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
         "depth": {"type": "int", "low": 1, "high": 2}}
N_TRIALS = 2
#: A rerun that takes longer hangs (the bug: it spun for good on a lock left by the killed append).
RERUN_LIMIT_S = 240
#: Runs `tunevlseg tune` and SIGKILLs it at the n-th journal append of one operation: "locked" while it holds
#: the journal lock (before writing), "after" once the line is written.
KILLER = """
import os, runpy, signal, sys
from optuna.storages.journal import JournalFileBackend

op, nth, when = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seen = 0
append = JournalFileBackend.append_logs

def killing_append(self, logs):
    global seen
    seen += logs[0]["op_code"] == op
    if seen == nth and when == "locked":
        self._lock.acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    append(self, logs)
    if seen == nth and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)

JournalFileBackend.append_logs = killing_append
sys.argv = ["tunevlseg", *sys.argv[4:]]
runpy.run_module("tunevlseg.cli", run_name="__main__")
"""
#: name: (operation, its n-th append of the run, when), then what the journal holds after the kill:
#: (number of trials, parameters of the last one). Trial 0 is sampled at random, trial 1 by TPE (one startup trial).
POINTS = {
    "creating trial 0, lock held": (Op.CREATE_TRIAL, 1, "locked", 0, []),
    "trial 0 created": (Op.CREATE_TRIAL, 1, "after", 1, []),
    "writing lr, lock held": (Op.SET_TRIAL_PARAM, 1, "locked", 1, []),
    "between lr and weight_decay": (Op.SET_TRIAL_PARAM, 1, "after", 1, ["lr"]),
    "between weight_decay and depth": (Op.SET_TRIAL_PARAM, 2, "after", 1, ["lr", "weight_decay"]),
    "all parameters written": (Op.SET_TRIAL_PARAM, 3, "after", 1, ["lr", "weight_decay", "depth"]),
    "writing its seed, lock held": (Op.SET_TRIAL_USER_ATTR, 1, "locked", 1, ["lr", "weight_decay", "depth"]),
    "trial 1 (TPE) between lr and weight_decay": (Op.SET_TRIAL_PARAM, 4, "after", 2, ["lr"]),
}


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("tissue", n=24, seed=7)


def tune_args(prepared: Path, model_dir: Path) -> list[str]:
    settings = dict(model="clipseg", method="coop", dataset="tissue", weights=str(model_dir), n_trials=N_TRIALS,
                    seed=4, device="cpu", search=SPACE, n_startup_trials=1,
                    training={"epochs": 1, "batch_size": 8, "progress": False, "amp": False})
    return ["tune", "--prepared", str(prepared), "--out", "cell", "--threads", "1", "--settings", json.dumps(settings)]


def rerun(prepared: Path, model_dir: Path, workdir: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "tunevlseg.cli", *tune_args(prepared, model_dir)], cwd=workdir,
                              capture_output=True, text=True, timeout=RERUN_LIMIT_S)
    except subprocess.TimeoutExpired as err:  # the child is killed: no orphan spins on
        pytest.fail(f"the rerun hung for {RERUN_LIMIT_S} s: {(err.stderr or b'')[-2000:]!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done, time.monotonic() - started


def journal_trials(workdir: Path) -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(workdir / "cell" / "study.journal")))
    return optuna.load_study(study_name="clipseg.coop.tissue", storage=storage).get_trials()


def comparable(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "cell" / "trials.csv").drop(columns=["duration_s", "peak_mem_mb"])


@pytest.fixture(scope="module")
def uninterrupted(prepared, tiny_model_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    rerun(prepared, tiny_model_dir, workdir)
    return workdir


@pytest.mark.parametrize("point", list(POINTS))
def test_kill_9_at_a_trial_start_then_the_rerun_finishes_with_the_uninterrupted_table(prepared, tiny_model_dir,
                                                                                     uninterrupted, tmp_path, point):
    op, nth, when, n_trials, params = POINTS[point]
    killed = subprocess.run([sys.executable, "-c", KILLER, str(int(op)), str(nth), when,
                             *tune_args(prepared, tiny_model_dir)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    trials = journal_trials(tmp_path)  # the kill hit where it was meant to
    assert len(trials) == n_trials and (not trials or list(trials[-1].params) == params)
    done, seconds = rerun(prepared, tiny_model_dir, tmp_path)
    assert "taking longer" not in done.stderr and "for the journal lock" not in done.stderr
    assert [t.state.name for t in journal_trials(tmp_path)] == ["COMPLETE"] * N_TRIALS
    pd.testing.assert_frame_equal(comparable(tmp_path), comparable(uninterrupted))
    print(f"{point}: rerun {seconds:.1f} s")


def test_a_stale_optuna_lock_with_a_relative_target_is_removed_and_the_run_goes_on(prepared, tiny_model_dir,
                                                                                   uninterrupted, tmp_path):
    """An earlier version's Optuna lock left by kill -9 (its target relative to the workflow's folder, so it
    does not resolve from the cell folder) no longer holds the study up."""
    (tmp_path / "cell").mkdir()
    stale = tmp_path / "cell" / "study.journal.lock"
    os.symlink("cell/study.journal", stale)
    done, _ = rerun(prepared, tiny_model_dir, tmp_path)
    assert f"{stale}: removed a stale Optuna journal lock" in done.stderr
    assert not os.path.lexists(stale)
    pd.testing.assert_frame_equal(comparable(tmp_path), comparable(uninterrupted))


def test_the_journal_lock_of_a_killed_process_is_free_at_once(tmp_path):
    journal = tmp_path / "study.journal"
    holder = subprocess.run([sys.executable, "-c", "import os, signal, sys\nfrom tunevlseg.study import JournalLock\n"
                             "JournalLock(sys.argv[1]).acquire()\nos.kill(os.getpid(), signal.SIGKILL)", str(journal)],
                            capture_output=True, text=True, timeout=120)
    assert holder.returncode == -signal.SIGKILL, holder.stderr
    assert JournalLock(journal).path.is_file()  # the lock file stays; its lock died with its process
    started = time.monotonic()
    lock = JournalLock(journal)
    assert lock.acquire() and time.monotonic() - started < 0.5
    lock.release()


def test_waiting_for_the_journal_lock_ends_on_a_stop_signal(tmp_path):
    journal = tmp_path / "study.journal"
    held = JournalLock(journal)
    held.acquire()  # another open file: flock excludes it even within this process
    sent = []

    def stop():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        with preempt.stop_on_signals():
            timer = threading.Timer(0.3, stop)
            timer.start()
            with pytest.raises(preempt.Preempted, match="SIGTERM"):
                JournalLock(journal).acquire()  # held by a live holder: it would wait for good
            stopped = time.monotonic()
            timer.join()
    finally:
        held.release()
    assert STOP_WAIT_S - 0.1 < stopped - sent[0] < STOP_WAIT_S + 1.0


def test_a_long_wait_for_the_journal_lock_is_named_and_ends_when_it_is_freed(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(study, "WAIT_WARNING_S", 0.2)
    journal = tmp_path / "study.journal"
    taken = threading.Event()

    def hold():  # a lock is released by the thread that took it
        held = JournalLock(journal)
        held.acquire()
        taken.set()
        time.sleep(0.7)
        held.release()

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tunevlseg.study"):
        lock = JournalLock(journal)
        assert lock.acquire()
    waited = time.monotonic() - started
    lock.release()
    holder.join()
    assert 0.6 < waited < 1.5
    assert f"{journal}.flock: waited 0 s for the journal lock: another live process holds it" in caplog.text
