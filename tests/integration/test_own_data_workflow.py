"""Your own data through the workflow with config only: a folder of JPEG images + masks and a 3-D nnU-Net
dataset -> data check -> index -> prepare -> tune -> a Dice table (3-D column per volume)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.local_fixtures import build_folder, build_nnunet_3d

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(workdir: Path, *cmd: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["timeout", "-s", "INT", "-k", "30", str(timeout), *cmd], capture_output=True, text=True,
                          env=env, cwd=workdir)


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(workdir, str(BIN / "snakemake"), "--snakefile", str(REPO / "workflow" / "Snakefile"),
                "--directory", str(workdir), "--cores", "2", *args)


def own_config(tmp_path: Path, weights: Path) -> dict:
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    polyps, _ = build_folder(tmp_path / "polyps", n=24, layout="jpeg")
    liver, _ = build_nnunet_3d(tmp_path / "nnUNet_raw" / "Dataset017_Liver", n=16)
    return {
        "results": "results", "seed": 0, "device": "cpu", "prompt": "p1",
        "datasets": {"mypolyps": polyps, "myct": {**liver, "domain": "radiology"}},
        "models": {"clipseg": {"weights": str(weights), "image_size": 32}},
        "benchmark": {"models": ["clipseg"], "methods": ["zeroshot", "coop"], "datasets": ["mypolyps", "myct"]},
        "tuning": {**demo["tuning"], "n_trials": 1, "final_seeds": 2},
        "training": {"epochs": 1, "batch_size": 16},
        "methods": {"coop": demo["methods"]["coop"]},
    }


def test_own_folder_and_nnunet_volumes_to_a_dice_table(tmp_path, tiny_model_dirs):
    cfg = own_config(tmp_path, tiny_model_dirs["clipseg"])
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    check = _run(work, str(BIN / "tunevlseg"), "data", "check", "--configfile", "config.yaml")
    assert check.returncode == 0, check.stderr
    assert "mypolyps (folder): OK, 24 samples" in check.stdout and "myct (nnunet): OK, 16 samples" in check.stdout

    out = _snakemake(work, "--configfile", "config.yaml")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    table = pd.read_csv(work / "results/tables/dice.csv")
    assert table[["mypolyps_mean", "myct_mean"]].notna().all().all()
    md = (work / "results/tables/dice.md").read_text()
    assert "Unit: Dice per volume" in md and "for myct; per image for the other datasets" in md

    # the myct column is the mean over test volumes of 2·Σ|P∩G| / (Σ|P|+Σ|G|); the slices stay in test_metrics.csv
    slices = pd.read_csv(work / "results/cells/clipseg/zeroshot/myct/seeds/0/test_metrics.csv")
    assert {"case", "inter", "pred_px", "true_px"} <= set(slices.columns)
    sums = slices.groupby("case")[["inter", "pred_px", "true_px"]].sum()
    total = sums["pred_px"] + sums["true_px"]
    per_volume = (2 * sums["inter"] / total.where(total > 0)).fillna(1.0)
    zeroshot = table[table["method"] == "zeroshot"].iloc[0]
    assert zeroshot["myct_mean"] == pytest.approx(per_volume.mean())
    manifest = pd.read_csv(work / "results/prepared/myct/32/manifest.csv")
    assert (manifest.groupby("case")["split"].nunique() == 1).all() and set(per_volume.index) == set(
        manifest.loc[manifest["split"] == "test", "case"])
    for method in ("zeroshot", "coop"):  # what the report shows: per volume; beside it the per-slice mean
        for rep in (0, 1) if method == "coop" else (0,):
            s = pd.read_csv(work / f"results/cells/clipseg/{method}/myct/seeds/{rep}/test_metrics.csv")
            g = s.groupby("case")[["inter", "pred_px", "true_px"]].sum()
            t = g["pred_px"] + g["true_px"]
            vol = (2 * g["inter"] / t.where(t > 0)).fillna(1.0)
            print(f"\nmyct {method} seed {rep}: per-volume Dice {vol.mean():.4f} over {len(vol)} volumes "
                  f"({', '.join(f'{c} {v:.3f}' for c, v in vol.items())}); per-slice Dice {s['dice'].mean():.4f} "
                  f"over {len(s)} slices")
    print(md)


def test_a_missing_mask_and_cuda_without_cuda_stop_the_workflow_before_any_job(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    polyps, _ = build_folder(tmp_path / "polyps", n=8, layout="jpeg")
    (tmp_path / "polyps" / "masks" / "img005.jpg").unlink()
    cfg["datasets"]["mypolyps"] = polyps
    cfg["benchmark"]["datasets"] = ["mypolyps"]
    cfg["device"] = "cuda"
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = _snakemake(work, "--configfile", "config.yaml")
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert (f"config: {work}/config.yaml: datasets.mypolyps: image {tmp_path}/polyps/images/img005.jpg has no mask "
            f"{tmp_path}/polyps/masks/img005.*") in text
    import torch

    if not torch.cuda.is_available():
        assert f"config: {work}/config.yaml: device: 'cuda' requested but this machine has no CUDA device" in text
    assert not (work / "results").exists()  # no job ran
