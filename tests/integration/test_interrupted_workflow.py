"""A training job stopped by SIGTERM and another killed with kill -9, under Snakemake: the retries resume
the interrupted trials and the final table equals that of an uninterrupted run (CPU, same seeds)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from tests.integration.test_workflow import REPO, SNAKEMAKE, reduced_config, snakemake, write_config

CELL = "results/cells/clipseg/coop/newlook"


def small_config() -> dict:
    cfg = reduced_config()
    cfg["benchmark"].update(models=["clipseg"], methods=["zeroshot", "coop"], datasets=["newlook"])
    cfg["tuning"]["n_trials"] = 2
    cfg["training"].update(epochs=6, early_stopping_patience=6)
    return cfg


def tune_pids(workdir: Path) -> list[int]:
    """PIDs of `tunevlseg tune` processes running in ``workdir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if any(a.endswith(b"tunevlseg") for a in args) and b"tune" in args and Path(cwd) == workdir:
            pids.append(int(proc.name))
    return pids


def next_epoch(state: Path) -> int:
    try:
        return torch.load(state, weights_only=True)["progress"]["next_epoch"]
    except Exception:  # noqa: BLE001 (absent, or read while being replaced)
        return -1


def interrupt_when(workdir: Path, trial: int, sig: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Send ``sig`` to the running tune job once ``trial`` has saved its first epoch."""
    state = workdir / CELL / "trials" / f"{trial:03d}" / "resume.pt"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "snakemake ended before the interruption"
        pids = tune_pids(workdir)
        if pids and next_epoch(state) >= 1:
            for pid in pids:
                os.kill(pid, sig)
            return
        time.sleep(0.05)
    raise AssertionError(f"trial {trial} never saved an epoch")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    write_config(workdir, small_config())
    out = snakemake(workdir)
    assert out.returncode == 0, out.stderr[-4000:]
    return workdir


def test_sigterm_and_kill_9_then_retries_give_the_uninterrupted_table(uninterrupted, tmp_path):
    workdir = tmp_path / "interrupted"
    shutil.copytree(uninterrupted, workdir, symlinks=True)  # keeps mtimes: data and stand-in are up to date
    for path in (CELL, "results/tables", "results/figures"):
        shutil.rmtree(workdir / path)
    cmd = ["timeout", "-s", "INT", "-k", "30", "900", str(SNAKEMAKE), "--snakefile", str(REPO / "workflow/Snakefile"),
           "--directory", str(workdir), "--cores", "2", "--retries", "2"]
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        interrupt_when(workdir, 0, signal.SIGTERM, proc)  # preemption during trial 0
        interrupt_when(workdir, 1, signal.SIGKILL, proc)  # a hard kill during trial 1
        _, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    assert proc.returncode == 0, stderr[-4000:]
    log = (workdir / "results/logs/tune/clipseg.coop.newlook.log").read_text()
    assert "trial 1 was interrupted: resuming it" in log  # the last attempt adopted trial 1
    storage = JournalStorage(JournalFileBackend(str(workdir / CELL / "study.journal")))
    trials = optuna.load_study(study_name="clipseg.coop.newlook", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["crashes"] == 0  # adopted after a clean stop (SIGTERM)
    assert trials[1].user_attrs["crashes"] == 1  # adopted after kill -9
    pd.testing.assert_frame_equal(pd.read_csv(workdir / "results/tables/dice.csv"),
                                  pd.read_csv(uninterrupted / "results/tables/dice.csv"))
    ours = pd.read_csv(workdir / CELL / "trials.csv").drop(columns=["duration_s", "peak_mem_mb"])
    theirs = pd.read_csv(uninterrupted / CELL / "trials.csv").drop(columns=["duration_s", "peak_mem_mb"])
    pd.testing.assert_frame_equal(ours, theirs)
