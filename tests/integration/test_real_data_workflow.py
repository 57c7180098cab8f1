"""The data rules on a real-layout dataset: obtain (gated archive) -> index -> prepare, then nothing to redo,
and a new archive at the same path redoes all three."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.data_fixtures import build_busi

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-s", "INT", "-k", "30", "300", str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(workdir), "--cores", "2", *args]
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)


def test_real_dataset_rules(tmp_path):
    build_busi(tmp_path / "drop")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["raw_dir"] = str(tmp_path / "shared_raw")
    cfg["datasets"]["busi"] = {"source": "busi"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    target = "results/prepared/busi/24"

    out = _snakemake(tmp_path, target)  # the archive is not where the instructions say: clear failure
    assert out.returncode != 0
    log = (tmp_path / "results" / "logs" / "obtain" / "busi.log").read_text()
    assert f"busi: missing archive.zip in {tmp_path / 'shared_raw' / 'busi'}" in log and "kaggle" in log.lower()

    cfg["datasets"]["busi"]["archive"] = str(tmp_path / "drop" / "archive.zip")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = _snakemake(tmp_path, target)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((tmp_path / target / "meta.json").read_text())
    assert meta["split_sizes"] == {"train": 24, "val": 3, "test": 3}
    assert (tmp_path / "shared_raw" / "busi" / "extracted" / "archive" / "Dataset_BUSI_with_GT").is_dir()
    dry = _snakemake(tmp_path, "-n", target)
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # a new release dropped at the same path: obtain, index and prepare run again and describe it
    build_busi(tmp_path / "drop", seed=42)
    dry = _snakemake(tmp_path, "-n", target)
    jobs = dry.stdout + dry.stderr
    assert all(f"rule {r}:" in jobs or f"localrule {r}:" in jobs for r in ("obtain", "index", "prepare")), jobs[-2000:]
    out = _snakemake(tmp_path, target)
    assert out.returncode == 0, out.stderr[-3000:]
    new_meta = json.loads((tmp_path / target / "meta.json").read_text())
    digest = hashlib.sha256((tmp_path / "drop" / "archive.zip").read_bytes()).hexdigest()
    assert new_meta["index"]["files"][0]["sha256"] == digest != meta["index"]["files"][0]["sha256"]
    assert new_meta["manifest_sha256"] != meta["manifest_sha256"]
