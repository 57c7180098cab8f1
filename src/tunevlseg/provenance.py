"""Provenance of a result: versions, code hash, git commit, inputs."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def source_hash() -> str:
    """sha256 over the package's Python sources (path + content), stable across machines."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def git_commit(directory: Path = PACKAGE_DIR) -> str | None:
    """The commit of the checkout holding ``directory`` (with '+dirty' if modified), or None."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment() -> dict:
    """Package version, code hash and the versions of the libraries results depend on."""
    versions = {}
    for name in ("tunevlseg", "torch", "transformers", "monai", "optuna", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return dict(versions=versions, source_sha256=source_hash(), git_commit=git_commit(),
                python=platform.python_version(), machine=platform.machine())
