"""One GPU per training job on a multi-GPU workstation: a file-lock based slot allocator.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but does not tell a
job *which* GPU to use (it does not set ``CUDA_VISIBLE_DEVICES``), so N concurrent jobs
would all land on GPU 0. Each training command therefore claims a free device itself:
it takes a non-blocking OS lock on ``<lock dir>/gpu<i>.lock`` for the first free ``i``,
sets ``CUDA_VISIBLE_DEVICES=i`` before CUDA is initialised, and holds the lock until the
process exits (the kernel releases it however the process ends, kill -9 included). When
every device is taken it waits for one to become free.

Nothing is claimed when a scheduler already chose the devices (``CUDA_VISIBLE_DEVICES`` set,
as SLURM does for ``--gpus``/``--gres``), when the device is ``cpu``, or when there is no GPU.
Devices come from ``TUNEVLSEG_GPUS`` (e.g. ``0,1,3``; tests fake GPUs this way) or
``nvidia-smi``; locks live in ``TUNEVLSEG_GPU_LOCK_DIR`` (default: a folder in the system's
temporary directory shared by every workflow of this user on the machine).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
_held: list[FileLock] = []  # locks kept for the life of the process


def available_gpus() -> list[str]:
    """Device indices of this machine: ``TUNEVLSEG_GPUS`` if set, else what ``nvidia-smi`` lists, else none."""
    listed = os.environ.get("TUNEVLSEG_GPUS")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return []
    return out.stdout.split() if out.returncode == 0 else []


def lock_dir() -> Path:
    """Where the per-device locks live (``TUNEVLSEG_GPU_LOCK_DIR`` or a per-user temporary folder)."""
    default = Path(tempfile.gettempdir()) / f"tunevlseg-gpu-locks-{os.getuid()}"
    return Path(os.environ.get("TUNEVLSEG_GPU_LOCK_DIR", default))


def claim_gpu(device: str = "auto", poll_s: float = 2.0, timeout_s: float | None = None) -> str | None:
    """Claim a free GPU for this process and expose only it through ``CUDA_VISIBLE_DEVICES``.

    Call before anything initialises CUDA. Returns the device index, or None when nothing
    was claimed (see the module docstring). Waits while every device is taken; raises
    ``RuntimeError`` after ``timeout_s`` seconds if given.
    """
    if device == "cpu" or os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    gpus = available_gpus()
    if not gpus:
        return None
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    started, waited = time.monotonic(), False
    while True:
        for index in gpus:
            lock = FileLock(folder / f"gpu{index}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            _held.append(lock)
            os.environ["CUDA_VISIBLE_DEVICES"] = index
            log.info("GPU slot: using device %s (CUDA_VISIBLE_DEVICES=%s)", index, index)
            return index
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise RuntimeError(f"no free GPU among {gpus} after {timeout_s:.0f} s (locks in {folder})")
        if not waited:
            log.info("GPU slot: all of %s are taken; waiting for one", gpus)
            waited = True
        time.sleep(poll_s)


def release_gpus() -> None:
    """Release the claimed device(s) (normally left to process exit)."""
    while _held:
        _held.pop().release()
