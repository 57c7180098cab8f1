"""Every job that loads a model declares mem_mb, derived from its model's measured figures in the model registry,
so that `--resources mem_mb=N` bounds a local run (tunevlseg.config.job_mem_mb)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunevlseg.config import MEMORY_MARGIN, RUNTIME_MB, WORKER_MB, job_mem_mb
from tunevlseg.estimate import load_config
from tunevlseg.models.registry import REGISTRY

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
MODEL_RULES = ("tune", "tune_worker", "retrain", "features", "pretrain_standin")


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """(config, [(rule, wildcards, resources)]) of a dry run of the demo with fine-tuning, two workers per cell
    and two seed replicates."""
    work = tmp_path_factory.mktemp("dry")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(work / "results")
    config["benchmark"].update(models=list(REGISTRY), methods=["zeroshot", "finetune", "coop", "vpt"],
                               datasets=["newlook"])
    for model in REGISTRY:  # every registered model: a stand-in where the demo has none (SAM 3)
        config["models"].setdefault(model, {"weights": "standin"})
    config["tuning"].update(workers_per_cell=2, final_seeds=2)
    config["training"]["num_workers"] = 1
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = ["timeout", "-s", "INT", "-k", "30", "300", str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(work), "--configfile", str(path), "--cores", "2", "-n"]
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    assert out.returncode == 0, out.stderr + out.stdout
    jobs = []
    for block in re.split(r"^(?=rule \w+:)", out.stdout + out.stderr, flags=re.M):
        head = re.match(r"rule (\w+):", block)
        if head and head.group(1) in MODEL_RULES:
            wildcards = dict(re.findall(r"(\w+)=([\w.]+)", re.search(r"wildcards: (.*)", block).group(1)))
            found = re.search(r"resources: (.*)", block)
            resources = dict(re.findall(r"(\w+)=([^,\s]+)", found.group(1))) if found else {}
            jobs.append((head.group(1), wildcards, resources))
    return load_config(path), jobs


@pytest.mark.parametrize("model", REGISTRY)
def test_every_model_job_declares_the_registry_figure(model, planned):
    config, jobs = planned
    mine = [(rule, w, res) for rule, w, res in jobs if w.get("model") == model]
    assert {rule for rule, _, _ in mine} == set(MODEL_RULES)
    for rule, wildcards, resources in mine:
        job = {"features": "features", "pretrain_standin": "pretrain"}.get(rule, "train")
        expected = job_mem_mb(config, model, wildcards.get("method"), job=job)
        assert int(resources.get("mem_mb", -1)) == expected, (rule, wildcards, resources)


@pytest.mark.parametrize("model", REGISTRY)
def test_every_model_has_measured_figures(model):
    figures = REGISTRY[model].memory
    assert figures is not None and figures.size == REGISTRY[model].default_options.get("image_size", figures.size)
    assert figures.train_mb_per_image >= figures.vision_mb_per_image >= figures.text_mb_per_image > \
        figures.encode_mb_per_image > 0
    assert 0 < figures.standin_weights_mb < figures.weights_mb


def test_the_paper_preset_on_the_cpu_needs_what_was_measured():
    """CRIS-R50 fine-tuning at 416 px, batch 32, 4 workers per loader: runtime + weights + the step's fixed
    part + 32 images × 635 MB + 9 × 120 MB of workers, with 10 % headroom — more than the 24 GiB machine the
    paper preset was OOM-killed on, so a local run with --resources mem_mb=22000 refuses it up front."""
    config = load_config(REPO / "workflow" / "presets" / "paper.yaml")
    cris = REGISTRY["cris"].memory
    need = (RUNTIME_MB + cris.weights_mb + cris.train_step_mb + 32 * cris.train_mb_per_image + 9 * WORKER_MB)
    assert job_mem_mb(config, "cris", "finetune") == 27500 == -(-need * MEMORY_MARGIN // 100) * 100
    assert job_mem_mb(config, "cris", "coop") == 12000  # text prompts: 272 MB per image
    config["training"]["batch_size"] = 8
    assert job_mem_mb(config, "cris", "finetune") == 10700  # the batch of 8 killed at 9.3 GB anon RSS
    config["training"]["num_workers"] = 0
    assert job_mem_mb(config, "cris", "finetune") == 9500
    config["device"] = "cuda"  # activations on the GPU: the host keeps the runtime and two copies of the weights
    assert job_mem_mb(config, "cris", "finetune") == 5000


def test_the_demo_stand_ins_fit_side_by_side():
    config = load_config(REPO / "config.yaml")
    assert max(job_mem_mb(config, m, k) for m in config["benchmark"]["models"]
               for k in config["benchmark"]["methods"]) <= 1000
