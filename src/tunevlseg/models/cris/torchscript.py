"""Read the weights of a TorchScript archive (OpenAI's ``RN50.pt``) without running any of its code.

``torch.jit.load`` executes the archive's compiled code (its ``__setstate__`` methods run on load),
so a crafted weights file could do anything; ``torch.load(weights_only=True)`` does not cover
TorchScript archives. A TorchScript archive is a zip: ``<name>/data.pkl`` pickles the module tree
(objects of ``__torch__.*`` classes whose state is a dict of attributes), tensors point into
``<name>/data/<key>`` by persistent id, and ``<name>/code/**.py`` declares each class's
``__parameters__`` and ``__buffers__``. This module unpickles ``data.pkl`` with an allow-list
(tensor rebuilding, storages, ``OrderedDict``; every ``__torch__`` class becomes an inert record),
reads the class declarations as text, and returns the state dict ``torch.jit.load(p).state_dict()``
would give. Anything else in the pickle is refused with the file named.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

#: The one-line conversion for archives this reader refuses (runs the archive's code: trusted files only).
CONVERSION = ("python -c \"import torch; torch.save(torch.jit.load('RN50.pt', map_location='cpu').state_dict(), "
              "'RN50_state_dict.pt')\"  # only for a file you trust: this runs its code")

_STORAGES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
             "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
             "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
             "BoolStorage": torch.bool}
_DECLARATION = re.compile(r"^class (\w+)\(Module\):\n  __parameters__ = \[([^\]]*)\]\n  __buffers__ = \[([^\]]*)\]",
                          re.M)


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _Record:
    """An inert stand-in for a ``__torch__`` class instance: keeps its class name and pickled state
    (pickle's NEWOBJ creates it without ``__init__``; BUILD hands the state to ``__setstate__``)."""

    qualname = ""
    state = None

    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None,
                    metadata=None) -> torch.Tensor:  # noqa: ARG001 (pickle's signature)
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            return type(name, (_Record,), {"qualname": qualname})
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"{self.path}: refusing to load {module}.{name} from the archive's pickle "
                                     "(only weights are read from TorchScript archives)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"{self.path}: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        data = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
        flat = torch.frombuffer(data, dtype=storage_type.dtype) if data else torch.empty(0, dtype=storage_type.dtype)
        return flat[:numel]


def is_torchscript(path: str | Path) -> bool:
    """TorchScript archives are zip files holding compiled code (``<root>/code/…``) and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def _declarations(archive: zipfile.ZipFile, prefix: str) -> dict[str, set[str]]:
    """``__torch__`` class name → the names of its parameters and buffers, read as text from ``code/``."""
    out = {}
    for name in archive.namelist():
        if not (name.startswith(f"{prefix}/code/") and name.endswith(".py")):
            continue
        module = name[len(f"{prefix}/code/"):-len(".py")].replace("/", ".")
        text = archive.read(name).decode("utf-8", errors="replace")
        for cls, params, buffers in _DECLARATION.findall(text):
            names = re.findall(r'"([^"]+)"', params + buffers)
            out[f"{module}.{cls}"] = set(names)
    return out


def _flatten(record: _Record, declared: dict[str, set[str]], prefix: str, out: dict) -> None:
    state = record.state if isinstance(record.state, dict) else {}
    names = declared.get(record.qualname)
    for key, value in state.items():
        if isinstance(value, _Record):
            _flatten(value, declared, f"{prefix}{key}.", out)
        elif isinstance(value, torch.Tensor) and (names is None or key in names):
            out[f"{prefix}{key}"] = value


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, read without executing its code.

    Raises ``ValueError`` naming the file (and :data:`CONVERSION` as the way out) when the archive
    holds anything but a plain module tree of tensors.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise pickle.UnpicklingError(f"{path}: expected one <name>/data.pkl, found {pickles}")
            prefix = pickles[0].split("/")[0]
            root = _Unpickler(archive.read(pickles[0]), archive, prefix, path).load()
            declared = _declarations(archive, prefix)
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, AttributeError, TypeError,
            RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: cannot read its weights without running its code ({err}). If you trust the "
                         f"file, convert it once: {CONVERSION}") from err
    if not isinstance(root, _Record):
        raise ValueError(f"{path}: the archive's root is not a module ({type(root).__name__}). If you trust the "
                         f"file, convert it once: {CONVERSION}")
    state: dict[str, torch.Tensor] = {}
    _flatten(root, declared, "", state)
    if not state:
        raise ValueError(f"{path}: no weights found in the TorchScript archive. If you trust the file, convert it "
                         f"once: {CONVERSION}")
    return state


__all__ = ["CONVERSION", "is_torchscript", "read_torchscript_state_dict"]
