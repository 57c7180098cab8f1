"""Atomic JSON/CSV writers shared by the CLI commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .data.atomic import atomic_write


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _atomic_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON (NaN/inf become null) via a temp file and rename."""
    _atomic_text(path, json.dumps(_clean(data), indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV via a temp file and rename."""
    _atomic_text(path, frame.to_csv(index=False))


def read_json(path: Path) -> dict:
    """Read JSON, with an error naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing input file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
