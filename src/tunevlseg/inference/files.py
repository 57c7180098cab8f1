"""The adapter folder on disk: ``adapter_config.json`` and ``adapter_model.safetensors``, nothing pickled.

An exported adapter (``tunevlseg export``) is a folder in the shape users know from peft:

=============================  ==================================================================
``adapter_config.json``        what the tensors mean and how to use them: the model registry name
                               and loading options, the identity of the base weights, the method
                               and its learner options, depth, n_ctx, the prompt, the input size,
                               normalisation, threshold, the cell it came from and its test Dice
``adapter_model.safetensors``  the learned tensors (the learner's state dict; for full fine-tuning
                               the model's state dict)
=============================  ==================================================================

Reading never unpickles: a folder holding a pickle-capable file (``.bin``, ``.pt``, ...) is refused,
and the tensors are read only by ``safetensors`` after its header has been checked.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..data.atomic import atomic_dir

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "tunevlseg-adapter"
FORMAT_VERSION = 1
#: Suffixes of files that may hold a pickle: never loaded, and their presence refuses the folder.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".tar")
#: Keys every adapter_config.json has.
REQUIRED_KEYS = ("format", "format_version", "model", "model_options", "base_weights", "method", "learner_options",
                 "depth", "n_ctx", "prompt", "image_size", "normalization", "threshold", "tensors")
#: The largest safetensors header we read (the header of a CLIPSeg state dict is ~100 kB).
MAX_HEADER_BYTES = 64 << 20


def write_adapter(folder: str | Path, config: dict, tensors: dict) -> Path:
    """Write an adapter folder atomically (a temporary folder renamed into place); returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    plain = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    with atomic_dir(folder) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file(plain, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "tunevlseg": FORMAT})
    return folder


def read_config(folder: str | Path) -> dict:
    """The checked ``adapter_config.json`` of an adapter folder; one-line errors naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder not found: {folder}")
    _refuse_pickles(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME} (not an adapter folder written by `tunevlseg export`)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the adapter config ({err})") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path}: not a TuneVLSeg adapter config (\"format\" must be {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: adapter format version {config.get('format_version')!r}; this TuneVLSeg reads "
                         f"version {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"{path}: adapter config lacks {', '.join(missing)}")
    return config


def read_tensors(folder: str | Path) -> dict:
    """The tensors of ``adapter_model.safetensors`` (CPU), after checking its header; never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    _refuse_pickles(folder)
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME}")
    check_safetensors(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a valid safetensors file ({err})") from err


def check_safetensors(path: Path) -> dict:
    """Check a safetensors file's framing without loading it: an 8-byte header length, a JSON header of
    tensor entries whose byte ranges tile the data exactly. Returns the header; ``ValueError`` naming the file
    (e.g. a pickle or a torch zip file renamed to ``.safetensors``)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file (only {size} bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(f"{path}: not a safetensors file (its header claims {length} bytes, the file has "
                             f"{size}); adapters are never unpickled")
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a safetensors file (its header is not JSON: {err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (its header is not a JSON object)")
    spans = sorted(tuple(v.get("data_offsets", (-1, -1))) for k, v in header.items() if k != "__metadata__"
                   if isinstance(v, dict))
    if len(spans) != len(header) - ("__metadata__" in header):
        raise ValueError(f"{path}: not a safetensors file (a header entry is not a tensor description)")
    end = 0
    for start, stop in spans:
        if start != end or stop < start:
            raise ValueError(f"{path}: safetensors header lies about its tensors' byte ranges")
        end = stop
    if 8 + length + end != size:
        raise ValueError(f"{path}: safetensors header describes {end} bytes of data, the file holds "
                         f"{size - 8 - length}")
    return header


def _refuse_pickles(folder: Path) -> None:
    found = sorted(p.name for p in folder.iterdir() if p.name.lower().endswith(PICKLE_SUFFIXES))
    if found:
        raise ValueError(f"{folder}: holds {', '.join(found)}: pickle-capable files are never loaded; an adapter "
                         f"folder holds only {CONFIG_NAME} and {WEIGHTS_NAME}")


__all__ = ["CONFIG_NAME", "FORMAT", "FORMAT_VERSION", "WEIGHTS_NAME", "check_safetensors", "read_config",
           "read_tensors", "write_adapter"]
