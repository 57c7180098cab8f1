"""The data package's modules import only layers below them (no cycle: spec <- sources <- registry <- ...)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "src" / "tunevlseg" / "data"
# lower number = lower layer; a module may import only modules of a strictly lower layer
LAYERS = {
    "__init__": 0, "atomic": 0, "spec": 0, "prompts": 0, "masks": 0,
    "fetch": 1, "synthetic": 1, "sources.common": 1, "pixels": 1,
    "sources": 2, "sources.*": 2, "volumes": 2,
    "registry": 3, "local": 3,
    "check": 4,
    "published": 4,
    "prepare": 5, "cache": 5,
    "ingest": 6,
    "cli": 7,
}


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    if module in LAYERS:
        return LAYERS[module]
    if module.startswith("sources."):
        return LAYERS["sources.*"]
    raise KeyError(f"tunevlseg.data.{module} has no layer in {__file__}: add it to LAYERS")


def _imports(path: Path) -> set[str]:
    """tunevlseg.data modules imported by ``path`` (module level and inside functions)."""
    name = _name(path)
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("tunevlseg.data"):
                target = node.module[len("tunevlseg.data."):] if node.module != "tunevlseg.data" else ""
            else:
                continue
            names = [a.name for a in node.names]
            for n in names:  # `from tunevlseg.data.sources import busi` imports a module
                full = f"{target}.{n}" if target else n
                out.add(full if (PACKAGE / (full.replace(".", "/") + ".py")).is_file() else target)
        elif isinstance(node, ast.Import):
            out |= {a.name[len("tunevlseg.data."):] for a in node.names if a.name.startswith("tunevlseg.data.")}
    return {m for m in out if m and m != name}


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[_name(p) for p in MODULES])
def test_imports_point_down(path):
    name = _name(path)
    for target in _imports(path):
        assert _layer(target) < _layer(name), f"tunevlseg.data.{name} imports tunevlseg.data.{target} (a layer above)"


def test_every_module_has_a_layer():
    for path in MODULES:
        _layer(_name(path))
    assert _imports(PACKAGE / "registry.py") >= {"spec", "sources.busi"}  # the parser sees what it must
