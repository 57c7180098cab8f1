"""The user's own data, with config only: ``source: folder | datalist | nnunet`` (readers in ``sources/``).

Each reader turns a ``datasets.<name>`` entry into samples.csv rows, as a registry dataset's reader
turns its release; the index, the leak-free grouped split, the prompts and the cache are the same.
Unlike the registry datasets, nothing is downloaded: the workflow indexes the files where they are.
"""

from __future__ import annotations

from types import ModuleType

from tunevlseg.data.sources import datalist, folder, nnunet

LOCAL_SOURCES: dict[str, ModuleType] = {"folder": folder, "datalist": datalist, "nnunet": nnunet}
#: Preparation settings a local dataset may set (3-D: empty slices kept, intensity window).
PREPARE_KEYS = ("empty_slice_fraction", "window")


def is_local(source: str) -> bool:
    return source in LOCAL_SOURCES


def local_rows(name: str, cfg: dict, source: str = "config") -> list[dict]:
    """samples.csv rows of a local dataset; errors start with ``<source>: datasets.<name>``."""
    where = f"{source}: datasets.{name}"
    reader = LOCAL_SOURCES[cfg["source"]]
    missing = [k for k in reader.REQUIRED if not cfg.get(k)]
    if missing:
        raise ValueError(f"{where}: source {cfg['source']} needs {', '.join(missing)}")
    return reader.index(cfg, where)


def local_inputs(cfg: dict) -> list[str]:
    """Files and folders the index of a local dataset reads (rule inputs); [] for other sources."""
    reader = LOCAL_SOURCES.get(cfg.get("source", ""))
    if reader is None:
        return []
    try:
        return reader.inputs(cfg)
    except (KeyError, TypeError):
        return []
