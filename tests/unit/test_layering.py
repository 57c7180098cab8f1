"""Imports point downwards: no module imports a layer above it, and what the Snakefile reads is torch-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "src" / "tunevlseg"

#: top-level part → the parts it must never import (directly; a function-level import counts too)
FORBIDDEN = {
    "methods": {"cells", "config", "data", "models", "prompts", "train", "tune", "report", "pretrain", "cli", "inference"},
    "data": {"cells", "config", "methods", "models", "prompts", "train", "tune", "report", "pretrain", "cli", "inference"},
    "prompts": {"cells", "config", "data", "models", "train", "tune", "report", "pretrain", "cli", "inference"},
    "models": {"cells", "config", "data", "train", "tune", "report", "pretrain", "cli", "inference"},
    "cells": {"config", "data", "prompts", "train", "tune", "report", "pretrain", "cli"},
    "config": {"prompts", "train", "tune", "report", "pretrain", "cli"},
    "train": {"config", "tune", "report", "pretrain", "cli"},
    "report": {"models", "prompts", "train", "tune", "pretrain", "cli"},
    "tune": {"report", "pretrain", "cli", "export", "predict"},
    # the adapter API (load an exported adapter, predict) is library code: models, prompts, data, never training
    "inference": {"cells", "config", "train", "tune", "report", "pretrain", "cli", "features", "export", "predict"},
    # the warm server imports third-party libraries only: tunevlseg's code is imported after each fork, never stale
    "warm": {"cells", "config", "data", "methods", "models", "prompts", "train", "tune", "report", "pretrain", "cli"},
}
#: What rules/common.smk and the Snakefile import at every Snakemake start (also inside every SLURM job).
SNAKEFILE_IMPORTS = ["tunevlseg.config", "tunevlseg.cells", "tunevlseg.methods", "tunevlseg.models.registry",
                     "tunevlseg.report.layout", "tunevlseg.data.ingest", "tunevlseg.data.check", "tunevlseg.data.local"]


def _part(module: str) -> str:
    return module.split(".")[1] if module.startswith("tunevlseg.") and module.count(".") else module


def _imports(path: Path) -> set[str]:
    """Absolute names of the tunevlseg modules ``path`` imports (relative imports resolved)."""
    module = "tunevlseg." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if path.name == "__init__.py":
        package = module.removesuffix(".__init__")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("tunevlseg"):
                names.add(target)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("tunevlseg")}
    return names


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_it(path):
    own = _part("tunevlseg." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    bad = sorted(m for m in _imports(path) if _part(m) in FORBIDDEN.get(own, set()))
    assert not bad, f"{path.relative_to(PACKAGE)} ({own}) imports {bad}"


def test_the_import_scan_sees_relative_imports():
    names = _imports(PACKAGE / "models" / "cris" / "adapter.py")
    assert {"tunevlseg.prompts.base", "tunevlseg.models.base", "tunevlseg.models.cris.model"} <= names


def test_what_the_snakefile_imports_is_torch_and_scipy_free():
    code = "import sys; " + "; ".join(f"import {m}" for m in SNAKEFILE_IMPORTS) + \
           "; print(sorted(m for m in ('torch', 'transformers', 'monai', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
