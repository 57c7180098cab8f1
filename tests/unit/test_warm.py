"""The warm start (``tunevlseg.warm``): a job forked by the server behaves like the plain process it replaces.

Servers here preload only ``json`` (fast); the entries are in ``tests/unit/warm_targets.py``. The workflow-level
check (same numbers with and without warm jobs) is in tests/integration/test_workflow.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunevlseg import warm

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm start is Linux-only")


def _env(**extra) -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "TUNEVLSEG_WARM_PRELOAD": "json", **extra}


def _wait(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _start_server(path: Path, log: Path, idle_s: float = 60) -> subprocess.Popen:
    # tempfile.gettempdir() caches the server's TMPDIR, as a preloaded library may
    code = ("import tempfile; tempfile.gettempdir(); from pathlib import Path; from tunevlseg import warm; "
            f"warm.serve(Path({str(path)!r}), idle_s={idle_s})")
    return subprocess.Popen([sys.executable, "-c", code], env=_env(), cwd=ROOT, stderr=log.open("w"))


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "w.sock"
    proc = _start_server(path, tmp_path / "server.log")
    _wait(lambda: warm._answers(path), what="the server's socket")
    yield path, proc
    path.unlink(missing_ok=True)  # the server stops when its socket file goes
    proc.wait(timeout=10)


def _client(path: Path, entry: str, *argv: str, cwd: Path, **popen) -> subprocess.Popen:
    code = (f"import sys; from pathlib import Path; from tunevlseg import warm; "
            f"sys.exit(warm.call({list(argv)!r}, entry={entry!r}, path=Path({str(path)!r})))")
    return subprocess.Popen([sys.executable, "-c", code], env=_env(WARM_TEST_MARKER="from the client"), cwd=cwd,
                            **popen)


def test_a_job_gets_the_clients_output_files_cwd_env_argv_and_gives_back_its_status(server, tmp_path):
    path, proc = server
    runs = []
    for status in (0, 3):
        out, err = tmp_path / f"out{status}", tmp_path / f"err{status}"
        with out.open("w") as o, err.open("w") as e:
            client = _client(path, "tests.unit.warm_targets:report", str(status), cwd=tmp_path, stdout=o, stderr=e)
            assert client.wait(timeout=30) == status
        seen = json.loads(out.read_text())
        assert err.read_text() == "a line on stderr\n"
        assert seen["cwd"] == str(tmp_path) and seen["marker"] == "from the client"
        assert seen["argv"] == [str(status)] and seen["sys_argv"] == ["tunevlseg", str(status)]
        assert seen["pid"] not in (proc.pid, client.pid)  # a forked job process, not the server
        runs.append(seen)
    assert runs[0]["pid"] != runs[1]["pid"]
    assert runs[0]["random"] != runs[1]["random"]  # re-seeded after the fork, as a fresh process would be
    log = (tmp_path / "server.log").read_text()
    assert f"warm: job {runs[0]['pid']}" in log and f"warm: job {runs[1]['pid']}" in log


def test_sigterm_to_the_client_stops_the_job_gracefully(server, tmp_path):
    path, _ = server
    pid_file = tmp_path / "job.pid"
    client = _client(path, "tests.unit.warm_targets:wait_for_stop", str(pid_file), cwd=tmp_path,
                     stdout=subprocess.PIPE, text=True)
    _wait(pid_file.exists, what="the job to start")
    client.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=30)
    assert client.returncode == 128 + signal.SIGTERM
    assert out == "stopped by SIGTERM\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped by its supervisor) counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def test_a_client_killed_with_sigkill_takes_its_job_along(server, tmp_path):
    path, _ = server
    pid_file = tmp_path / "job.pid"
    client = _client(path, "tests.unit.warm_targets:sleep_forever", str(pid_file), cwd=tmp_path)
    _wait(pid_file.exists, what="the job to start")
    job = int(pid_file.read_text())
    assert _alive(job)
    client.kill()
    client.wait(timeout=10)
    _wait(lambda: not _alive(job), timeout=10, what="the orphaned job to be killed")


def test_without_a_server_the_command_runs_in_process_and_the_next_one_is_warm(tmp_path, monkeypatch):
    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "w.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket file nobody listens on (a server killed with kill -9)
    stale.close()
    assert warm.call(["0"], entry="tests.unit.warm_targets:report", path=path) is None
    _wait(lambda: warm._answers(path), what="the started server")
    out = tmp_path / "out"
    with out.open("w") as o:
        assert _client(path, "tests.unit.warm_targets:report", "0", cwd=tmp_path, stdout=o).wait(timeout=30) == 0
    assert json.loads(out.read_text())["cwd"] == str(tmp_path)
    assert "serving on" in Path(f"{path}.log").read_text()
    path.unlink()  # stop it


def test_two_servers_started_at_once_leave_one(tmp_path):
    path = tmp_path / "w.sock"
    first, second = (_start_server(path, tmp_path / f"server{i}.log") for i in (1, 2))
    _wait(lambda: first.poll() is not None or second.poll() is not None, what="one server to step aside")
    assert warm._answers(path)
    survivor = first if first.poll() is None else second
    assert (second if survivor is first else first).returncode == 0
    path.unlink()
    survivor.wait(timeout=10)
    logs = "".join((tmp_path / f"server{i}.log").read_text() for i in (1, 2))
    assert logs.count("serving on") == 1 and "failed" not in logs  # the other's probe is no failed job


def test_an_idle_server_exits_and_removes_its_socket(tmp_path):
    path = tmp_path / "w.sock"
    proc = _start_server(path, tmp_path / "server.log", idle_s=0.5)
    assert proc.wait(timeout=30) == 0
    assert not path.exists()


def test_only_training_commands_on_the_cpu_go_warm(monkeypatch):
    monkeypatch.setenv("TUNEVLSEG_WARM", "1")
    monkeypatch.delenv("TUNEVLSEG_GPUS", raising=False)
    monkeypatch.setattr(warm, "gpu_present", lambda: False)
    assert warm.wants_warm("tune", '{"device": "auto"}') and warm.wants_warm("retrain", '{"device": "cpu"}')
    assert not warm.wants_warm("tune", '{"device": "cuda"}')
    assert not warm.wants_warm("aggregate", '{"device": "cpu"}') and not warm.wants_warm("tune", "not json")
    monkeypatch.setattr(warm, "gpu_present", lambda: True)
    assert not warm.wants_warm("tune", '{"device": "auto"}') and warm.wants_warm("tune", '{"device": "cpu"}')
    monkeypatch.setenv("TUNEVLSEG_WARM", "0")
    assert not warm.wants_warm("tune", '{"device": "cpu"}')


def test_a_fake_gpu_counts_as_a_gpu(monkeypatch):
    monkeypatch.setenv("TUNEVLSEG_GPUS", "0,1")
    assert warm.gpu_present()


def test_the_server_is_keyed_by_the_import_time_environment():
    base = {"PATH": "/usr/bin", "HF_HOME": "/a"}
    assert warm.socket_path(base) == warm.socket_path({**base, "SNAKEMAKE_JOB": "7", "PATH": "/bin"})
    assert warm.socket_path(base) != warm.socket_path({**base, "HF_HOME": "/b"})
    assert warm.socket_path(base) != warm.socket_path({**base, "OMP_NUM_THREADS": "4"})


def test_a_changed_installation_gets_a_new_server(tmp_path, monkeypatch):
    monkeypatch.setattr(warm.sysconfig, "get_path", lambda name: str(tmp_path))
    before = warm.socket_path({})
    (tmp_path / "newpkg").mkdir()  # a package installed into site-packages
    os.utime(tmp_path, ns=(10**18, 10**18))  # a different mtime whatever the clock's resolution
    assert warm.socket_path({}) != before


def test_a_job_runs_its_exit_handlers_and_uses_the_clients_tmpdir(server, tmp_path, monkeypatch):
    path, _ = server
    marker, out = tmp_path / "atexit", tmp_path / "out"
    client_tmp = tmp_path / "client-tmp"
    client_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(client_tmp))  # the server started with the test's own TMPDIR
    with out.open("w") as o:
        assert _client(path, "tests.unit.warm_targets:at_exit", str(marker), cwd=tmp_path, stdout=o).wait(30) == 0
    assert marker.read_text() == "ran"
    assert out.read_text().strip() == str(client_tmp)
