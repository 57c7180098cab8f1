"""The demo workflow through a REAL SLURM: snakemake --executor slurm --workflow-profile workflow/profiles/slurm.

Needs a reachable SLURM with a GPU GRES (tests/slurm/start_slurm.sh starts a one-node one on
127.0.0.1; `.ci/run` does that before `make test`); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

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
        return f"no SLURM controller reachable (sinfo: {out.stderr.strip()[:200]}); see tests/slurm/start_slurm.sh"
    if "gpu" not in out.stdout:
        return "the SLURM cluster has no GPU GRES (tests/slurm/start_slurm.sh configures a fake one)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed"
    return None


pytestmark = pytest.mark.skipif(_slurm_problem() is not None, reason=str(_slurm_problem()))


def slurm_config() -> dict:
    """The reduced demo shrunk to one dataset and two cells; the coop cell split over two workers."""
    cfg = reduced_config()
    cfg["benchmark"].update(methods=["zeroshot", "coop"], datasets=["tissue"])
    cfg["tuning"].update(n_trials=3, workers_per_cell=2)
    return cfg


# The profile's sizes are for a real cluster; the test node has 2 CPUs and a few GB.
SMALL_NODE = ["--default-resources", "mem_mb=1000", "runtime=30", "cpus_per_task=1",
              "--set-resources", "tune:gpu=1", "tune:mem_mb=2000", "tune:cpus_per_task=1",
              "tune_worker:gpu=1", "tune_worker:mem_mb=2000", "tune_worker:cpus_per_task=1",
              "pretrain_standin:gpu=1", "pretrain_standin:mem_mb=2000", "pretrain_standin:cpus_per_task=1",
              "--set-threads", "tune=1", "tune_worker=1", "prepare=1", "pretrain_standin=1"]


def run_snakemake(workdir: Path, *args: str, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-s", "INT", "-k", "30", str(timeout), str(SNAKEMAKE), "--snakefile",
           str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_demo")
    cfg = slurm_config()
    write_config(workdir, cfg)
    started = time.perf_counter()
    out = run_snakemake(workdir, "--executor", "slurm", "--workflow-profile", str(REPO / "workflow/profiles/slurm"),
                        "--slurm-status-command", "squeue", "--slurm-keep-successful-logs",
                        "--slurm-init-seconds-before-status-checks", "2", "--jobs", "4", *SMALL_NODE)
    seconds = time.perf_counter() - started
    assert out.returncode == 0, f"snakemake --executor slurm failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    print(f"SLURM run: {seconds:.1f} s wall")
    return workdir, cfg, out


def slurm_logs(workdir: Path) -> dict[str, list[Path]]:
    """The plugin's per-job SLURM logs, by rule: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log."""
    root = workdir / ".snakemake" / "slurm_logs"
    logs: dict[str, list[Path]] = {}
    for path in root.rglob("*.log"):
        rule = next(p for p in path.relative_to(root).parts if p.startswith("rule_"))[len("rule_"):]
        logs.setdefault(rule, []).append(path)
    return logs


def test_every_job_went_through_slurm_with_its_resources(slurm_run):
    workdir, cfg, _ = slurm_run
    logs = slurm_logs(workdir)
    n_cells = len(cfg["benchmark"]["methods"]) * len(cfg["benchmark"]["datasets"])
    assert len(logs.get("tune", [])) == n_cells
    assert len(logs.get("tune_worker", [])) == cfg["tuning"]["workers_per_cell"]  # coop only; zeroshot has no study
    assert len(logs.get("pretrain_standin", [])) == 1 and len(logs.get("aggregate", [])) == 1
    assert len(logs.get("synth", [])) == 2 and len(logs.get("prepare", [])) == 2  # shapes + tissue
    for rule, paths in logs.items():
        for path in paths:
            job_id = re.fullmatch(r"(\d+)\.log", path.name)
            assert job_id, path
            # The controller still knows the finished job (MinJobAge), with what it was given.
            info = subprocess.run(["scontrol", "show", "job", job_id.group(1)], capture_output=True, text=True)
            assert info.returncode == 0, info.stderr
            assert "JobState=COMPLETED" in info.stdout, (rule, info.stdout[:500])
            if rule in ("tune", "tune_worker", "pretrain_standin"):
                assert "TresPerJob=gres:gpu:1" in info.stdout, (rule, info.stdout)
            else:
                assert "gpu" not in info.stdout, (rule, info.stdout)


def test_table_is_complete(slurm_run):
    workdir, cfg, _ = slurm_run
    table = pd.read_csv(workdir / "results/tables/dice.csv")
    assert len(table) == len(cfg["benchmark"]["methods"])
    assert table["tissue_mean"].notna().all() and table["tissue_mean"].between(0, 1).all()
    cell = workdir / "results/cells/clipseg/coop/tissue"
    trials = pd.read_csv(cell / "trials.csv")
    # two workers on two (fake) GPUs shared the study: exactly n_trials, all complete, distinct seeds
    assert list(trials["state"]) == ["COMPLETE"] * cfg["tuning"]["n_trials"]
    assert trials["seed"].is_unique
    ran = [json.loads((cell / "workers" / f"{i}.json").read_text())["ran"] for i in range(2)]
    assert sorted(ran[0] + ran[1]) == list(range(cfg["tuning"]["n_trials"]))
