"""A cell's Optuna study on disk: its fingerprint, its storage, and what happens when either goes stale.

* **Fingerprint.** A study belongs to everything that determines its trials: the search space and
  fixed values, the training settings, the prompt variant, the model and the identity of its
  weights, the prepared dataset (manifest hash), the seed, the sampler settings, ``n_ctx`` and the
  init phrase. It is written to ``fingerprint.json`` in the cell folder. A rerun whose fingerprint
  differs does not reuse the old trials: the old journal, trial folders and seed replicates are
  moved to ``superseded/<time>-<old fingerprint>/`` (kept, never mixed in) and a fresh study starts.
  ``n_trials`` is not part of it: raising it continues the same study.
* **Journal.** A torn last line (power loss, full disk) is cut off, with a warning naming the file,
  before anything is appended; a damaged line elsewhere is an error naming the file and line.
  It is always opened by its absolute path, and appended to under :class:`JournalLock`, an OS lock
  that the kernel frees when its holder dies (kill -9 included), so a killed append never leaves a
  lock behind for the rerun to wait on.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from filelock import FileLock, Timeout
from optuna.storages.journal import JournalFileBackend

from . import preempt
from .cells import CellFiles
from .data.atomic import atomic_write

log = logging.getLogger(__name__)

#: Files and folders of a cell that belong to one study (moved aside together when it goes stale).
STUDY_ENTRIES = ("study.journal", "fingerprint.json", "trials", "workers", "seeds", "trials.csv", "best.json",
                 "provenance.json")
#: Once a stop signal arrived, how long a process still waits for the journal lock before it stops (Preempted).
STOP_WAIT_S = 2.0
#: Seconds of waiting for the journal lock between two warnings naming it.
WAIT_WARNING_S = 10.0


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(weights: str) -> dict:
    """What identifies the weights a cell loads: the sha256 of every file of a local folder or file, or
    the hub name (and the cached revision when the hub cache knows it).

    A local folder or file is hashed once per process per state of its files (size, mtime, ctime, inode:
    a file replaced or rewritten in place changes its ctime, so the new content is always hashed)."""
    path = Path(weights)
    if path.is_file() or path.is_dir():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                      if p.is_file() and p.name != "grounding.json")
        state = tuple((str(p), s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for p in files for s in [p.stat()])
        return copy.deepcopy(_local_identity(str(path), state))
    identity = {"hub": weights}
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(weights, "config.json")
        if isinstance(cached, str):
            identity["revision"] = Path(cached).parent.name
    except Exception:  # noqa: BLE001 - the hub cache is optional here
        pass
    return identity


@functools.lru_cache(maxsize=32)
def _local_identity(weights: str, state: tuple) -> dict:
    """sha256 of the files of ``weights`` (``state``: their stat, the memo's key)."""
    path = Path(weights)
    if path.is_file():
        return {"file": path.name, "sha256": _sha256_file(path)}
    return {"folder": {str(Path(name).relative_to(path)): _sha256_file(Path(name)) for name, *_ in state}}


def fingerprint(components: dict) -> str:
    """sha256 of the canonical JSON of ``components``."""
    return hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two component dicts (one level per nested dict)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "weights":
            out += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def read_fingerprint(files: CellFiles) -> dict | None:
    path = Path(files.fingerprint_json)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable cell fingerprint ({err}); move the cell folder aside to start "
                         "it afresh") from err


def write_fingerprint(files: CellFiles, digest: str, components: dict, study_name: str) -> None:
    path = Path(files.fingerprint_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({"fingerprint": digest, "study_name": study_name, "components": components},
                                  indent=1, sort_keys=True, default=str) + "\n")


def supersede(files: CellFiles, old_digest: str, reason: str) -> Path | None:
    """Move the cell's study files to ``superseded/<time>-<old digest>/``; returns that folder (None if empty)."""
    present = [name for name in STUDY_ENTRIES if (files.path / name).exists()]
    if not present:
        return None
    target = files.path / "superseded" / f"{time.strftime('%Y%m%dT%H%M%S')}-{old_digest[:12]}"
    target.mkdir(parents=True, exist_ok=True)
    for name in present:
        shutil.move(str(files.path / name), str(target / name))
    log.warning("%s: %s: the earlier study (trials, journal, seeds) was moved to %s and a fresh study starts",
                files.root, reason, target)
    return target


class JournalLock:
    """The journal's append lock (Optuna's lock interface: ``acquire``, ``release``): an OS lock (``flock``) on
    ``<journal>.flock``.

    The kernel frees it when its process dies, however it dies, so no lock outlives a killed append.
    (Optuna's default, a symlink ``<journal>.lock``, stays after kill -9 and is forced only after
    30 s of waiting — never when its relative target does not resolve from the cell folder: the
    rerun then spins for good.) The wait stays interruptible: after a stop signal
    (:mod:`tunevlseg.preempt`) it gives up within ``STOP_WAIT_S`` with ``Preempted``.
    """

    SUFFIX = ".flock"

    def __init__(self, journal: Path):
        self.path = Path(os.path.abspath(f"{journal}{self.SUFFIX}"))
        self._lock = FileLock(self.path)

    def acquire(self) -> bool:
        started = time.monotonic()
        warn_at, give_up, pause = started + WAIT_WARNING_S, None, 0.001
        while True:
            try:
                self._lock.acquire(timeout=0)
                return True
            except Timeout:
                pass
            now = time.monotonic()
            if preempt.requested():
                give_up = give_up or now + STOP_WAIT_S
                if now >= give_up:
                    raise preempt.Preempted(preempt.first_signal())
            if now >= warn_at:
                log.warning("%s: waited %.0f s for the journal lock: another live process holds it", self.path,
                            now - started)
                warn_at = now + WAIT_WARNING_S
            time.sleep(pause)
            pause = min(2 * pause, 0.05)

    def release(self) -> None:
        self._lock.release()


def remove_optuna_lock(journal: Path) -> None:
    """Remove a lock left by Optuna's own journal lock (``<journal>.lock``: tunevlseg before the OS lock, killed
    in an append), with a warning naming it; the journal is locked through :class:`JournalLock` only."""
    stale = Path(f"{journal}.lock")
    if os.path.lexists(stale):
        stale.unlink(missing_ok=True)
        log.warning("%s: removed a stale Optuna journal lock (left by a process killed while appending); the "
                    "journal is now locked through %s, which no killed process can leave behind", stale,
                    JournalLock(journal).path)


def repair_journal(path: Path) -> None:
    """Cut a torn last line off an Optuna journal file (warning naming it); fail naming a damaged line.

    Runs under the journal's own lock, so no live worker is appending meanwhile.
    """
    path = Path(os.path.abspath(path))
    if not path.is_file() or path.stat().st_size == 0:
        return
    lock = JournalLock(path)
    lock.acquire()
    try:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: the last line is torn (%d bytes, e.g. a power loss or a full disk); cutting it off "
                        "before appending", path, len(data) - keep)
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
            data = data[:keep]
        for number, line in enumerate(data.splitlines(), start=1):
            try:
                json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{path}: line {number} of the Optuna journal is damaged ({err}); the study "
                                 "cannot be read. Move the cell folder aside (or delete it) to start the cell "
                                 "afresh") from err
    finally:
        lock.release()


def open_storage(url: str | None, cell_dir: Path):
    """The study's storage: a journal file in the cell folder by default, else an Optuna storage URL.

    A journal file is safe for several processes on one host (and on shared file systems
    with working locks); for workers on many nodes use an RDB URL (``postgresql://...``,
    ``mysql://...``) or ``grpc://host:port`` for Optuna's gRPC storage proxy. SQLite must
    not be shared by parallel workers.
    """
    if url is None:  # by its absolute path: the process may change its working folder later
        journal = Path(os.path.abspath(CellFiles(str(cell_dir)).journal))
        remove_optuna_lock(journal)
        repair_journal(journal)
        return JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalLock(journal)))
    if url.startswith("grpc://"):
        from optuna.storages import GrpcStorageProxy

        host, _, port = url[len("grpc://"):].partition(":")
        return GrpcStorageProxy(host=host, port=int(port or 13000))
    return optuna.storages.RDBStorage(url)


__all__ = ["JournalLock", "changed_keys", "fingerprint", "open_storage", "read_fingerprint", "repair_journal", "supersede",
           "weights_identity", "write_fingerprint"]
