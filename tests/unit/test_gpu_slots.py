"""The local GPU slot allocator, on CPU with faked devices (TUNEVLSEG_GPUS): one device per process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tunevlseg import gpu_slots

# A process that claims a slot, prints its CUDA_VISIBLE_DEVICES, and holds it until stdin closes.
HOLDER = (
    "import os, sys; from tunevlseg.gpu_slots import claim_gpu; "
    "claim_gpu(poll_s=0.05); print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); sys.stdin.read()"
)


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEVLSEG_GPUS", "0,1")
    monkeypatch.setenv("TUNEVLSEG_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "unset-by-undo")  # so that undo restores the original state
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    yield
    gpu_slots.release_gpus()


def holder() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_get_distinct_devices_and_a_third_waits(fake_gpus):
    first, second = holder(), holder()
    got_first, got_second = first.stdout.readline().strip(), second.stdout.readline().strip()
    assert {got_first, got_second} == {"0", "1"}
    third = holder()
    time.sleep(1.0)
    assert third.poll() is None and not _ready(third)  # both devices taken: it waits
    first.stdin.close()  # the first job ends
    first.wait(timeout=30)
    assert third.stdout.readline().strip() == got_first  # and the waiting one gets its device
    for proc in (second, third):
        proc.stdin.close()
        proc.wait(timeout=30)


def _ready(proc: subprocess.Popen) -> bool:
    import select

    return bool(select.select([proc.stdout], [], [], 0)[0])


def test_killed_job_frees_its_device(fake_gpus, monkeypatch):
    monkeypatch.setenv("TUNEVLSEG_GPUS", "0")
    first = holder()
    assert first.stdout.readline().strip() == "0"
    first.kill()  # kill -9: no clean-up code runs, the kernel drops the lock
    first.wait(timeout=30)
    assert gpu_slots.claim_gpu(poll_s=0.05, timeout_s=10) == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_scheduler_choice_cpu_and_no_gpu_claim_nothing(fake_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # SLURM chose already
    assert gpu_slots.claim_gpu() is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_slots.claim_gpu(device="cpu") is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("TUNEVLSEG_GPUS", "")
    assert gpu_slots.claim_gpu() is None and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_all_taken_times_out_with_a_clear_error(fake_gpus, monkeypatch):
    monkeypatch.setenv("TUNEVLSEG_GPUS", "0")
    other = holder()
    assert other.stdout.readline().strip() == "0"
    try:
        with pytest.raises(RuntimeError, match=r"no free GPU among \['0'\]"):
            gpu_slots.claim_gpu(poll_s=0.05, timeout_s=0.3)
    finally:
        other.stdin.close()
        other.wait(timeout=30)
