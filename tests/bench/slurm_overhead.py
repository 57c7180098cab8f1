"""Per-job overhead of the SLURM path vs the local executor on the reduced demo (prints figures; not a test).

Needs a reachable SLURM with a GPU GRES (tests/slurm/start_slurm.sh). Runs the config of
tests/slurm/test_slurm_workflow.py twice in fresh temporary folders — once locally
(`--cores 2`), once through `--executor slurm` — and prints the wall times, the job count,
the SLURM jobs' own run times (scontrol) and (slurm − local wall) / jobs.

    PYTHONPATH=src:. .venv/bin/python tests/bench/slurm_overhead.py
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.test_workflow import REPO, write_config
from tests.slurm.test_slurm_workflow import SMALL_NODE, run_snakemake, slurm_config, slurm_logs


def timed(workdir: Path, *args: str) -> float:
    started = time.perf_counter()
    out = run_snakemake(workdir, *args, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"snakemake failed in {workdir}:\n{out.stderr[-3000:]}")
    return time.perf_counter() - started


def runtime_s(job_id: str) -> float:
    info = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    h, m, s = (int(x) for x in re.search(r"RunTime=(\d+):(\d+):(\d+)", info).groups())
    return h * 3600 + m * 60 + s


def main() -> None:
    cfg = slurm_config()
    with tempfile.TemporaryDirectory() as local_dir, tempfile.TemporaryDirectory() as slurm_dir:
        local, slurm = Path(local_dir), Path(slurm_dir)
        write_config(local, cfg)
        write_config(slurm, cfg)
        t_local = timed(local, "--cores", "2")
        t_slurm = timed(slurm, "--executor", "slurm", "--workflow-profile", str(REPO / "workflow/profiles/slurm"),
                        "--slurm-status-command", "squeue", "--slurm-keep-successful-logs",
                        "--slurm-init-seconds-before-status-checks", "2", "--jobs", "4", *SMALL_NODE)
        logs = [p for paths in slurm_logs(slurm).values() for p in paths]
        n_jobs = len(logs)
        in_slurm = sum(runtime_s(p.stem) for p in logs)
        print(f"jobs: {n_jobs}")
        print(f"wall local (--cores 2): {t_local:.1f} s")
        print(f"wall SLURM:             {t_slurm:.1f} s")
        print(f"sum of SLURM job run times: {in_slurm:.0f} s (mean {in_slurm / n_jobs:.1f} s per job)")
        print(f"overhead per job, (SLURM - local wall) / jobs: {(t_slurm - t_local) / n_jobs:.1f} s")


if __name__ == "__main__":
    main()
