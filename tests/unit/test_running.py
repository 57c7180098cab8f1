"""The running marker: a job killed by SIGKILL (the OOM killer's signal) is reported as such on the rerun."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tunevlseg import cli
from tunevlseg.running import check_previous, marker_path, memory_now, running_marker, start_ticks

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_job_is_reported_by_its_rerun_with_its_peak_memory(tmp_path):
    """A process holding 300 MB in its marker block, killed with SIGKILL: the marker stays with the peak
    RSS sampled before the kill, and the next run's check names SIGKILL, the OOM killer and that peak."""
    marker = tmp_path / "cell" / "running.json"
    child = textwrap.dedent(f"""
        import time
        from tunevlseg.running import running_marker
        with running_marker({str(marker)!r}, "test", interval=0.05):
            block = bytearray(300 * 2**20)  # touched: zero-filled pages are resident
            for i in range(0, len(block), 4096):
                block[i] = 1
            print("ready", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # a few samples after the allocation
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    record = json.loads(marker.read_text())
    assert record["pid"] == proc.pid and record["peak_rss_mb"] >= 300
    message = check_previous(marker)
    assert "was killed (SIGKILL — most often the kernel's OOM killer" in message
    assert f"pid {proc.pid}" in message and f"peak RSS so far {record['peak_rss_mb']:.0f} MB" in message
    assert "set mem_mb / lower batch_size" in message


def test_the_rerun_of_a_command_logs_the_message_and_replaces_the_marker(tmp_path, caplog):
    """`tunevlseg features` with a marker of a dead process beside its output: the warning in its log (here
    the command then fails on its settings), and the marker gone after it exits."""
    out = tmp_path / "features" / "m.d.32"
    marker = marker_path("features", out)
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"pid": _dead_pid(), "start_ticks": 1, "host": socket.gethostname(),
                                  "started": "2026-01-01T00:00:00", "peak_rss_mb": 9321.0, "peak_total_mb": 9900.0}))
    with caplog.at_level(logging.WARNING):
        status = cli.main(["features", "--prepared", str(tmp_path / "none"), "--out", str(out),
                           "--settings", '{"bogus": 1}'])
    assert status == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("was killed (SIGKILL" in w and "peak RSS so far 9321 MB; with its workers at most 9900 MB PSS" in w
               for w in warnings), warnings
    assert not marker.exists()


def test_a_clean_or_failed_exit_removes_the_marker(tmp_path):
    path = tmp_path / "running.json"
    with running_marker(path, "x") as m:
        assert json.loads(path.read_text())["pid"] == m.record["pid"]
    assert not path.exists()
    with pytest.raises(ValueError), running_marker(path, "x"):
        raise ValueError("a failing job")
    assert not path.exists()
    assert check_previous(path) is None


def test_a_live_marker_is_another_run_not_a_killed_one(tmp_path):
    path = tmp_path / "running.json"
    path.write_text(json.dumps({"pid": os.getpid(), "start_ticks": start_ticks(os.getpid()),
                                "host": socket.gethostname()}))
    assert "another run of this job is running now" in check_previous(path)


def test_marker_places():
    assert marker_path("tune", "c") == Path("c/running.json")
    assert marker_path("tune", "c", worker=2) == Path("c/running.worker2.json")
    assert marker_path("retrain", "c", replicate=3) == Path("c/running.seed3.json")
    assert marker_path("pretrain", "r/pretrained/cris") == Path("r/pretrained/cris.running.json")


def test_memory_now_counts_the_workers():
    """A child holding 200 MB: the total (PSS of the process tree) grows by it."""
    before = memory_now()["total_mb"]
    proc = subprocess.Popen([sys.executable, "-c", "b = bytearray(200 * 2**20)\nfor i in range(0, len(b), 4096): "
                             "b[i] = 1\nprint('ready', flush=True)\nimport time; time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert memory_now()["total_mb"] - before >= 190
    finally:
        proc.kill()
        proc.wait()
