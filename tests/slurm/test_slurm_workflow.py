"""The demo workflow through a REAL SLURM: snakemake --executor slurm --workflow-profile workflow/profiles/slurm.

Needs a reachable SLURM with a GPU GRES (tests/slurm/start_slurm.sh starts a one-node one on
127.0.0.1; `.ci/run` does that before `make test`); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from tests.integration.test_workflow import REPO, SNAKEMAKE, reduced_config, write_config

TIMEOUT = 900


def _slurm_problem() -> str | None:
    """Why SLURM cannot be used here, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client (sinfo/sbatch) on PATH; start one with tests/slurm/start_slurm.sh (root)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T %G"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: no SLURM controller reachable"
    if out.returncode != 0:
        last = out.stderr.strip().splitlines()[-1:] or ["no output"]
        return f"no SLURM controller reachable (sinfo: {last[0][:160]}); start one with tests/slurm/start_slurm.sh"
    if "gpu" not in out.stdout:
        return "the SLURM cluster has no GPU GRES (tests/slurm/start_slurm.sh configures a fake one)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed"
    return None


_PROBLEM = _slurm_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))


def slurm_config() -> dict:
    """The reduced demo shrunk to one dataset and two cells; the coop cell split over two workers."""
    cfg = reduced_config()
    cfg["benchmark"].update(models=["clipseg"], methods=["zeroshot", "coop"], datasets=["newlook"])
    cfg["tuning"].update(n_trials=3, workers_per_cell=2)
    cfg["training"].update(epochs=5, early_stopping_patience=5)  # long enough to be preempted mid-trial
    return cfg


# The rules that run a model on a GPU: the profile's set-resources entries asking for one (one place).
PROFILE = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
GPU_RULES = tuple(rule for rule, res in PROFILE["set-resources"].items() if res.get("gpu"))
# The profile's sizes are for a real cluster; the test node has 2 CPUs and a few GB.
SMALL_NODE = ["--default-resources", "mem_mb=1000", "runtime=30", "cpus_per_task=1",
              "--set-resources", *(f"{rule}:{key}" for rule in GPU_RULES
                                   for key in ("gpu=1", "mem_mb=2000", "cpus_per_task=1")),
              "--set-threads", *(f"{rule}=1" for rule in (*GPU_RULES, "prepare"))]


def run_snakemake(workdir: Path, *args: str, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-s", "INT", "-k", "30", str(timeout), str(SNAKEMAKE), "--snakefile",
           str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)


def owner_job(lock: Path) -> str | None:
    """The SLURM job id of the process holding ``lock`` open (workers hold their trial's owner.lock)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == str(lock) for fd in (proc / "fd").iterdir()):
                env = dict(kv.split(b"=", 1) for kv in (proc / "environ").read_bytes().split(b"\0") if b"=" in kv)
                return env.get(b"SLURM_JOB_ID", b"").decode() or None
        except OSError:
            continue
    return None


def next_epoch(state: Path) -> int:
    try:
        return torch.load(state, weights_only=True)["progress"]["next_epoch"]
    except Exception:  # noqa: BLE001 (absent, or read while being replaced)
        return -1


def preempt_one_worker(workdir: Path, epochs: int, proc: subprocess.Popen, timeout: float = 600) -> str:
    """SIGTERM, like a preemption, the SLURM job of a worker mid-way through a trial; return the job id."""
    trials = workdir / "results/cells/clipseg/coop/newlook/trials"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "snakemake ended before a worker could be preempted"
        for state in sorted(trials.glob("*/resume.pt")):
            if 1 <= next_epoch(state) <= epochs - 2:  # trained one epoch, at least two to go
                job_id = owner_job(state.parent / "owner.lock")
                if job_id:
                    subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
                    return job_id
        time.sleep(0.05)
    raise AssertionError("no worker was caught mid-trial")


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_demo")
    cfg = slurm_config()
    write_config(workdir, cfg)
    cmd = ["timeout", "-s", "INT", "-k", "30", str(TIMEOUT), str(SNAKEMAKE), "--snakefile",
           str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--executor", "slurm", "--workflow-profile", str(REPO / "workflow/profiles/slurm"),
           "--slurm-status-command", "squeue", "--slurm-keep-successful-logs",
           "--slurm-init-seconds-before-status-checks", "2", "--jobs", "4", *SMALL_NODE]
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        preempted = preempt_one_worker(workdir, cfg["training"]["epochs"], proc)
        stdout, stderr = proc.communicate(timeout=TIMEOUT + 60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, f"snakemake --executor slurm failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"
    print(f"SLURM run: {seconds:.1f} s wall")
    return workdir, cfg, preempted


def slurm_logs(workdir: Path) -> dict[str, list[Path]]:
    """The plugin's per-job SLURM logs, by rule: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log."""
    root = workdir / ".snakemake" / "slurm_logs"
    logs: dict[str, list[Path]] = {}
    for path in root.rglob("*.log"):
        rule = next(p for p in path.relative_to(root).parts if p.startswith("rule_"))[len("rule_"):]
        logs.setdefault(rule, []).append(path)
    return logs


def test_every_job_went_through_slurm_with_its_resources(slurm_run):
    workdir, cfg, preempted = slurm_run
    logs = slurm_logs(workdir)
    n_cells = len(cfg["benchmark"]["methods"]) * len(cfg["benchmark"]["datasets"])
    assert len(logs.get("tune", [])) == n_cells
    # coop only (zeroshot has no study): K workers + the retry of the preempted one
    assert len(logs.get("tune_worker", [])) == cfg["tuning"]["workers_per_cell"] + 1
    assert len(logs.get("pretrain_standin", [])) == 1 and len(logs.get("aggregate", [])) == 1
    assert len(logs.get("retrain", [])) == cfg["tuning"]["final_seeds"] - 1  # coop's seed replicates
    assert len(logs.get("synth", [])) == 2 and len(logs.get("prepare", [])) == 2  # shapes + newlook
    for rule, paths in logs.items():
        for path in paths:
            job_id = re.fullmatch(r"(\d+)\.log", path.name)
            assert job_id, path
            # The controller still knows the finished job (MinJobAge), with what it was given.
            info = subprocess.run(["scontrol", "show", "job", job_id.group(1)], capture_output=True, text=True)
            assert info.returncode == 0, info.stderr
            state = "FAILED" if path.stem == preempted else "COMPLETED"
            assert f"JobState={state}" in info.stdout, (rule, info.stdout[:500])
            if rule in GPU_RULES:
                assert "TresPerJob=gres:gpu:1" in info.stdout, (rule, info.stdout)
            else:
                assert "gpu" not in info.stdout, (rule, info.stdout)


def test_preempted_worker_was_retried_and_resumed_its_trial(slurm_run):
    workdir, cfg, preempted = slurm_run
    failed_log = next(p for p in slurm_logs(workdir)["tune_worker"] if p.stem == preempted)
    assert "Error in rule tune_worker" in failed_log.read_text()
    cell = workdir / "results/cells/clipseg/coop/newlook"
    storage = JournalStorage(JournalFileBackend(str(cell / "study.journal")))
    trials = optuna.load_study(study_name="clipseg.coop.newlook", storage=storage).get_trials()
    adopted = [t for t in trials if "crashes" in t.user_attrs]
    assert len(adopted) == 1 and adopted[0].user_attrs["crashes"] == 0  # resumed after a clean stop
    assert [t.state.name for t in trials] == ["COMPLETE"] * cfg["tuning"]["n_trials"]


def test_table_is_complete(slurm_run):
    workdir, cfg, _ = slurm_run
    table = pd.read_csv(workdir / "results/tables/dice.csv")
    assert len(table) == len(cfg["benchmark"]["methods"])
    assert table["newlook_mean"].notna().all() and table["newlook_mean"].between(0, 1).all()
    cell = workdir / "results/cells/clipseg/coop/newlook"
    trials = pd.read_csv(cell / "trials.csv")
    # two workers on two (fake) GPUs shared the study: exactly n_trials, all complete, distinct seeds
    assert list(trials["state"]) == ["COMPLETE"] * cfg["tuning"]["n_trials"]
    assert trials["seed"].is_unique
    ran = [json.loads((cell / "workers" / f"{i}.json").read_text())["ran"] for i in range(2)]
    assert sorted(ran[0] + ran[1]) == list(range(cfg["tuning"]["n_trials"]))
