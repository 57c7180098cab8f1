"""Atomic file and directory writes: readers never see a half-written output."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary name ends with ``path``'s own name, so suffix-sensitive writers
    (``np.save`` adding ``.npy``, nibabel choosing gzip from ``.nii.gz``) behave
    as for ``path`` itself. On error the temporary file is deleted and ``path``
    is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix="-" + path.name)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh directory ``<path>.tmp-XXXX``; rename it to ``path`` on success.

    An existing ``path`` is replaced (only once the new one is complete). On
    error the temporary directory is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=path.name + ".tmp-"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=path.name + ".old-"))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def leftovers(path: str | os.PathLike) -> list[Path]:
    """The temporary folders of earlier :func:`atomic_dir` writes of ``path`` that never finished (their process
    was killed: SIGKILL, SIGBUS, a node lost): ``<path>.tmp-*`` and ``<path>.old-*``. Only safe to remove by
    the single writer of ``path`` (in the workflow: the job of the rule that outputs it)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefixes = (f"{path.name}.tmp-", f"{path.name}.old-")
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefixes) and p.is_dir())
