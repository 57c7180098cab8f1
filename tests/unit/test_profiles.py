"""The SLURM profile and the rules agree on which jobs need a GPU."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def rules_declaring_gpu() -> set[str]:
    """Names of the rules in rules/*.smk whose resources include ``gpu=``."""
    found = set()
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            head = re.match(r"rule (\w+):", block)
            if head and re.search(r"^\s+gpu=", block, flags=re.M):
                found.add(head.group(1))
    return found


def test_every_gpu_rule_gets_a_gpu_on_slurm():
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    on_slurm = {rule for rule, res in profile["set-resources"].items() if res.get("gpu")}
    declared = rules_declaring_gpu()
    assert {"tune", "tune_worker", "retrain", "features", "pretrain_standin"} <= declared
    assert declared == on_slurm
