"""The warm start (``tunevlseg.warm``): a job forked by the server behaves like the plain process it replaces,
and nobody but the user can reach the server or be reached by the user's commands.

Servers here preload only ``json`` (fast) and run the entries of ``tests/unit/warm_targets.py``. The two-user
cases run a second process as ``nobody`` (skipped unless the tests run as root). The workflow-level check (same
numbers with and without warm jobs) is in tests/integration/test_workflow.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tunevlseg import warm

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm start is Linux-only")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a second user needs root (setuid)")
TARGETS = {name: f"tests.unit.warm_targets:{name}"
           for name in ("report", "attributes", "wait_for_stop", "sleep_forever", "tick", "at_exit")}
PLAIN = 99  # what the test client exits with when the command would run as a plain process


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


def _start_server(path: Path, log: Path, idle_s: float = 60, **popen) -> subprocess.Popen:
    # tempfile.gettempdir() caches the server's TMPDIR, as a preloaded library may
    code = ("import tempfile; tempfile.gettempdir(); from pathlib import Path; from tunevlseg import warm; "
            f"warm.serve(Path({str(path)!r}), idle_s={idle_s}, entries={TARGETS!r})")
    return subprocess.Popen([sys.executable, "-c", code], env=_env(), cwd=ROOT, stderr=log.open("w"), **popen)


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "w.sock"
    proc = _start_server(path, tmp_path / "server.log")
    _wait(lambda: warm._answers(path), what="the server's socket")
    yield path, proc
    path.unlink(missing_ok=True)  # the server stops when its socket file goes
    proc.wait(timeout=10)


def _client(path: Path, command: str, *argv: str, cwd: Path, **popen) -> subprocess.Popen:
    code = (f"import sys; from pathlib import Path; from tunevlseg import warm; "
            f"status = warm.call({list(argv)!r}, command={command!r}, path=Path({str(path)!r})); "
            f"sys.exit({PLAIN} if status is None else status)")
    return subprocess.Popen([sys.executable, "-c", code], env=_env(WARM_TEST_MARKER="from the client"), cwd=cwd,
                            **popen)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped by its supervisor) counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _as_nobody(func, *args):
    """Run ``func(say, *args)`` in a forked child that became the user nobody (a second local user); the lines it
    ``say``s come back through the returned file, the child's pid with it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with os.fdopen(write, "w", buffering=1) as out:
                func(lambda line: print(line, file=out, flush=True), *args)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return pid, os.fdopen(read)


def _exit_status(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# ---------------------------------------------------------------- a job is the command's process


def test_a_job_gets_the_clients_output_files_cwd_env_argv_and_gives_back_its_status(server, tmp_path):
    path, proc = server
    runs = []
    for status in (0, 3):
        out, err = tmp_path / f"out{status}", tmp_path / f"err{status}"
        with out.open("w") as o, err.open("w") as e:
            client = _client(path, "report", str(status), cwd=tmp_path, stdout=o, stderr=e)
            assert client.wait(timeout=30) == status
        seen = json.loads(out.read_text())
        assert err.read_text() == "a line on stderr\n"
        assert seen["cwd"] == str(tmp_path) and seen["marker"] == "from the client" and seen["command"] == "report"
        assert seen["argv"] == [str(status)] and seen["sys_argv"] == ["tunevlseg", str(status)]
        assert seen["pid"] not in (proc.pid, client.pid)  # a forked job process, not the server
        runs.append(seen)
    assert runs[0]["pid"] != runs[1]["pid"]
    assert runs[0]["random"] != runs[1]["random"]  # re-seeded after the fork, as a fresh process would be
    log = (tmp_path / "server.log").read_text()
    assert f"warm: job {runs[0]['pid']}" in log and f"warm: job {runs[1]['pid']}" in log


def _limited(nice: int, umask: int):
    def apply():
        os.umask(umask)
        os.nice(nice)
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 7 << 30))
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 300))
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    return apply


def test_a_job_takes_on_the_commands_umask_nice_limits_affinity_and_signal_dispositions(server, tmp_path):
    path, _ = server
    seen = {}
    for how in ("plain", "warm"):
        made, out = tmp_path / f"{how}.made", tmp_path / f"{how}.out"
        with out.open("w") as o:
            if how == "plain":
                cmd = [sys.executable, "-m", "tests.unit.warm_targets", "attributes", str(made)]
                proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=o, preexec_fn=_limited(7, 0o027))
            else:
                proc = _client(path, "attributes", str(made), cwd=tmp_path, stdout=o, preexec_fn=_limited(7, 0o027))
            assert proc.wait(timeout=30) == 0
        seen[how] = json.loads(out.read_text())
    assert seen["warm"] == seen["plain"]
    assert seen["warm"]["umask"] == "0o640" and seen["warm"]["nice"] == 7 and seen["warm"]["sighup"] == 1
    assert seen["warm"]["as"] == [6 << 30, 7 << 30] and seen["warm"]["nofile"] == [200, 300]
    assert len(seen["warm"]["affinity"]) == 1 and signal.SIGUSR2 in seen["warm"]["blocked"]


def test_a_command_the_job_cannot_imitate_runs_plain(server, tmp_path):
    path, _ = server
    client = _client(path, "report", "0", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     group=NOBODY, extra_groups=[]) if os.geteuid() == 0 else None
    if client is None:
        pytest.skip("another group needs root")
    out, err = client.communicate(timeout=30)
    assert client.returncode == PLAIN and out == ""
    assert err.count("\n") == 1 and "warm start not used: the command runs with other group ids" in err


def test_sigterm_to_the_client_stops_the_job_gracefully(server, tmp_path):
    path, _ = server
    pid_file = tmp_path / "job.pid"
    client = _client(path, "wait_for_stop", str(pid_file), cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    _wait(pid_file.exists, what="the job to start")
    client.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=30)
    assert client.returncode == 128 + signal.SIGTERM
    assert out == "stopped by SIGTERM\n"


def test_sighup_ignored_by_the_command_is_ignored_by_the_job(server, tmp_path):
    path, _ = server
    pid_file, count = tmp_path / "job.pid", tmp_path / "count"
    client = _client(path, "tick", str(pid_file), str(count), "1.5", cwd=tmp_path,
                     preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    _wait(pid_file.exists, what="the job to start")
    client.send_signal(signal.SIGHUP)
    os.kill(int(pid_file.read_text()), signal.SIGHUP)  # even sent to the job itself, as nohup's child ignores it
    assert client.wait(timeout=30) == 0
    assert int(count.read_text()) > 30  # it ran to its end


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def test_a_stopped_command_stops_its_job_until_it_continues(server, tmp_path):
    path, _ = server
    pid_file, count = tmp_path / "job.pid", tmp_path / "count"
    # its own process group, whose parent (pytest) is in the session: the kernel discards SIGTSTP sent to an
    # orphaned process group (pytest's own may be one when it runs in the background, as under CI)
    client = _client(path, "tick", str(pid_file), str(count), "8", cwd=tmp_path, process_group=0)
    _wait(lambda: count.exists() and count.read_text(), what="the job to tick")
    job = int(pid_file.read_text())
    for stop in (signal.SIGSTOP, signal.SIGTSTP):
        client.send_signal(stop)
        _wait(lambda: _state(client.pid) == "T", timeout=10, what="the command to stop")
        _wait(lambda: _state(job) == "T", timeout=15, what="the job to stop")
        frozen = count.read_text()
        time.sleep(0.3)
        assert count.read_text() == frozen
        client.send_signal(signal.SIGCONT)
        _wait(lambda frozen=frozen: count.read_text() != frozen, timeout=15, what="the job to continue")
    assert client.wait(timeout=60) == 0


def test_a_client_killed_with_sigkill_takes_its_job_along(server, tmp_path):
    path, _ = server
    pid_file = tmp_path / "job.pid"
    client = _client(path, "sleep_forever", str(pid_file), cwd=tmp_path)
    _wait(pid_file.exists, what="the job to start")
    job = int(pid_file.read_text())
    assert _alive(job)
    client.kill()
    client.wait(timeout=10)
    _wait(lambda: not _alive(job), timeout=10, what="the orphaned job to be killed")


def test_a_killed_supervisor_takes_its_job_along_and_the_command_fails(server, tmp_path):
    path, _ = server
    pid_file = tmp_path / "job.pid"
    client = _client(path, "sleep_forever", str(pid_file), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    _wait(pid_file.exists, what="the job to start")
    job = int(pid_file.read_text())
    os.kill(warm._parent(job), signal.SIGKILL)
    _, err = client.communicate(timeout=30)
    assert client.returncode == 1 and "ended without a status (its supervisor was killed)" in err
    assert not _alive(job)  # gone before the command returned


def test_a_job_runs_its_exit_handlers_and_uses_the_clients_tmpdir(server, tmp_path, monkeypatch):
    path, _ = server
    marker, out = tmp_path / "atexit", tmp_path / "out"
    client_tmp = tmp_path / "client-tmp"
    client_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(client_tmp))  # the server started with the test's own TMPDIR
    with out.open("w") as o:
        assert _client(path, "at_exit", str(marker), cwd=tmp_path, stdout=o).wait(30) == 0
    assert marker.read_text() == "ran"
    assert out.read_text().strip() == str(client_tmp)


# ---------------------------------------------------------------- only the user's own commands, only its own


def test_the_server_runs_only_its_own_entry_points(server, tmp_path):
    path, _ = server
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(path))
    with conn, open(os.devnull) as null:
        request = json.dumps({"command": "os:system", "entry": "os:system", "argv": ["touch x"], "cwd": "/",
                              "env": {}, "state": warm.process_state()}).encode()
        socket.send_fds(conn, [warm._HEADER.pack(len(request)) + request], [null.fileno()] * 3)
        assert json.loads(conn.makefile().readline()) == {
            "refused": "'os:system' is not a command the warm server runs"}
    client = _client(path, "tests.unit.warm_targets:report", "0", cwd=tmp_path, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    out, err = client.communicate(timeout=30)
    assert client.returncode == PLAIN and out == "" and "is not a command the warm server runs" in err


def test_a_cli_job_runs_only_the_command_it_was_allowed_as(capsys):
    from tunevlseg import cli

    assert warm.ENTRIES["tune"] == "tunevlseg.cli:run_local"
    assert cli.run_local(["-v", "check-config", "nothing.yaml"], "tune") == 2  # "tune" allowed, another named
    assert capsys.readouterr().err == ("tunevlseg: error: the warm job is 'tune' but its arguments name "
                                       "'check-config'\n")


@pytest.fixture
def short_tmp():
    """A temporary folder with a short path (AF_UNIX socket paths are limited to 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="w", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


def test_the_private_folder_is_the_users_alone(short_tmp, monkeypatch):
    tmp_path = short_tmp
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(warm.tempfile, "tempdir", None)
    folder = warm.private_dir()
    info = os.lstat(folder)
    assert folder == tmp_path / f"tunevlseg-warm-{os.getuid()}" and stat.S_IMODE(info.st_mode) == 0o700
    assert warm.socket_path().parent == folder
    folder.chmod(0o755)
    with pytest.raises(warm.Refused, match="has mode 0755, not 0700"):
        warm.private_dir()
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    folder.symlink_to(tmp_path / "elsewhere")  # planted by someone else before the first command
    with pytest.raises(warm.Refused, match="is not a folder"):
        warm.private_dir()
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert warm.private_dir() == runtime / "tunevlseg-warm"
    if os.geteuid() == 0:
        os.chown(runtime / "tunevlseg-warm", NOBODY, NOBODY)
        with pytest.raises(warm.Refused, match=f"belongs to uid {NOBODY}"):
            warm.private_dir()
        os.chown(runtime, NOBODY, NOBODY)  # not the user's runtime folder: the temporary folder's instead
        folder.unlink()
        assert warm.private_dir() == folder


def test_an_unsafe_folder_means_a_plain_command_with_one_warning(tmp_path, capsys):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)  # like /tmp
    assert warm.call(["tune"], path=shared / "w.sock") is None
    err = capsys.readouterr().err
    assert err == (f"tunevlseg: warm start not used: {shared} has mode 1777, not 0700; "
                   "running as a plain process\n")
    assert list(shared.iterdir()) == []  # no server started, no lock or log made


def test_a_planted_lock_symlink_is_not_followed(tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "w.sock.lock").symlink_to(victim)
    assert warm.call(["tune"], path=tmp_path / "w.sock") is None
    assert victim.read_text() == "precious"
    assert "warm start not used" in capsys.readouterr().err and not (tmp_path / "w.sock").exists()


def _try_connect_and_bind(say, path: str) -> None:
    for what, where in (("connect", path), ("bind", path + ".planted")):
        try:
            getattr(socket.socket(socket.AF_UNIX), what)(where)
            say(f"{what} ok")
        except PermissionError:
            say(f"{what} denied")


@needs_root
def test_another_user_can_neither_bind_nor_connect_in_the_private_folder(server):
    path, _ = server
    pid, said = _as_nobody(_try_connect_and_bind, str(path))
    assert said.read().split("\n")[:2] == ["connect denied", "bind denied"]
    assert _exit_status(pid) == 0


def _hostile_server(say, path: str) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    os.chmod(path, 0o777)
    say("ready")
    conn, _ = listener.accept()
    say(str(len(conn.recv(65536))))


@needs_root
def test_the_client_refuses_a_server_of_another_user(short_tmp, capsys):
    shared = short_tmp  # in /tmp: the other user can reach it
    shared.chmod(0o777)
    path = shared / "w.sock"
    pid, said = _as_nobody(_hostile_server, str(path))
    assert said.readline() == "ready\n"
    with pytest.raises(warm.Refused, match=f"served by uid {NOBODY}, not by uid 0"):
        warm._connect(path)
    assert said.read() == "0\n" and _exit_status(pid) == 0  # closed without sending anything
    assert warm.call(["tune"], path=path) is None  # through call: the shared folder is refused before that
    assert "has mode 0777, not 0700" in capsys.readouterr().err


def _send_a_request(say, path: str) -> None:
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(path)
    body = json.dumps({"command": "report", "argv": ["0"], "cwd": "/", "env": {}}).encode()
    try:
        socket.send_fds(conn, [warm._HEADER.pack(len(body)) + body], [0, 1, 2])
        say(repr(conn.recv(100)))
    except OSError:
        say("closed")


@needs_root
def test_the_server_refuses_another_users_connection(server, tmp_path):
    path, _ = server
    public = Path(tempfile.mkdtemp(prefix="public", dir="/tmp"))
    try:
        public.chmod(0o755)
        os.link(path, public / "w.sock")  # the same socket reached from outside the private folder
        os.chmod(public / "w.sock", 0o777)
        pid, said = _as_nobody(_send_a_request, str(public / "w.sock"))
        answer = said.read()
        assert _exit_status(pid) == 0
    finally:
        shutil.rmtree(public)
    assert answer in ("b''\n", "closed\n")
    log = tmp_path / "server.log"
    _wait(lambda: f"refused a connection from uid {NOBODY}" in log.read_text(), timeout=5, what="the refusal")
    assert "warm: job" not in log.read_text()


def test_the_client_refuses_a_job_that_is_not_the_servers(tmp_path):
    """A server (of this user) that answers with another process's pid gets no signal sent to that process."""
    path = tmp_path / "w.sock"
    bystander = subprocess.Popen(["sleep", "30"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    client = _client(path, "report", "0", cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    conn, _ = listener.accept()
    with conn:
        for fd in socket.recv_fds(conn, 1 << 20, 3)[1]:
            os.close(fd)
        conn.sendall((json.dumps({"server": os.getpid(), "pid": bystander.pid}) + "\n").encode())
        assert conn.recv(1) == b""  # no go: the client closed
    client.send_signal(signal.SIGTERM)
    _, err = client.communicate(timeout=30)
    listener.close()
    assert f"the warm job {bystander.pid} is not a process of the warm server {os.getpid()}" in err
    assert bystander.poll() is None  # not signalled
    bystander.kill()
    bystander.wait()


# ---------------------------------------------------------------- starting and stopping servers


def test_without_a_server_the_command_runs_in_process_and_the_next_one_is_warm(tmp_path, monkeypatch):
    for key, value in _env(TUNEVLSEG_WARM_PRELOAD="json,planted").items():
        monkeypatch.setenv(key, value)
    work = tmp_path / "work"
    work.mkdir()
    (work / "planted.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.chdir(work)  # a module there must not shadow the server's imports
    path = tmp_path / "w.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket file nobody listens on (a server killed with kill -9)
    stale.close()
    assert warm.call(["tune", "--help"], path=path) is None
    _wait(lambda: warm._answers(path), what="the started server")
    client = _client(path, "tune", "tune", "--help", cwd=work, stdout=subprocess.PIPE, text=True)
    out, _ = client.communicate(timeout=60)
    assert client.returncode == 0 and out.startswith("usage: tunevlseg tune")
    log = Path(f"{path}.log")
    assert "serving on" in log.read_text() and "not preloaded planted" in log.read_text()
    assert not (tmp_path / "imported").exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(log.stat().st_mode) == 0o600
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


# ---------------------------------------------------------------- which commands, which server


def test_only_training_commands_on_the_cpu_outside_a_scheduler_go_warm(monkeypatch):
    monkeypatch.setenv("TUNEVLSEG_WARM", "1")
    monkeypatch.delenv("TUNEVLSEG_GPUS", raising=False)
    for name in warm.SCHEDULER_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(warm, "gpu_present", lambda: False)
    assert warm.wants_warm("tune", '{"device": "auto"}') and warm.wants_warm("retrain", '{"device": "cpu"}')
    assert not warm.wants_warm("tune", '{"device": "cuda"}')
    assert not warm.wants_warm("aggregate", '{"device": "cpu"}') and not warm.wants_warm("tune", "not json")
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    assert not warm.wants_warm("tune", '{"device": "cpu"}')
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setattr(warm, "gpu_present", lambda: True)
    assert not warm.wants_warm("tune", '{"device": "auto"}') and warm.wants_warm("tune", '{"device": "cpu"}')
    monkeypatch.setenv("TUNEVLSEG_WARM", "0")
    assert not warm.wants_warm("tune", '{"device": "cpu"}')


def test_a_fake_gpu_counts_as_a_gpu(monkeypatch):
    monkeypatch.setenv("TUNEVLSEG_GPUS", "0,1")
    assert warm.gpu_present()


def test_the_server_is_keyed_by_the_import_time_environment():
    base = {"PATH": "/usr/bin", "HF_HOME": "/a", "TMPDIR": "/tmp"}
    assert warm.socket_path(base) == warm.socket_path({**base, "SNAKEMAKE_JOB": "7", "PATH": "/bin", "PWD": "/x"})
    for changed in ({"HF_HOME": "/b"}, {"OMP_NUM_THREADS": "4"}, {"XDG_CACHE_HOME": "/c"}, {"TQDM_DISABLE": "1"},
                    {"TMPDIR": "/var/tmp"}, {"LANG": "C"}):
        assert warm.socket_path(base) != warm.socket_path({**base, **changed}), changed


def test_no_unkeyed_variable_is_read_while_the_server_imports():
    """Record every environment variable the preloaded libraries read at import time (their values are cached)."""
    code = ("import os, sys, json, importlib\n"
            "reads = set()\n"
            "class Recording(type(os.environ)):\n"
            "    def __getitem__(self, key):\n"
            "        if sys._getframe(1).f_code.co_name != '__iter__':  # a scan of all names reads none of them\n"
            "            reads.add(key)\n"
            "        return super().__getitem__(key)\n"
            "    def __contains__(self, key):\n"
            "        reads.add(key)\n"
            "        return super().__contains__(key)\n"
            "os.environ.__class__ = Recording\n"
            "from tunevlseg import warm\n"
            "for name in warm.PRELOAD:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(reads)))\n")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    reads = set(json.loads(out.splitlines()[-1]))
    # the recording works: known import-time reads (TMPDIR only where a library asks for the temp folder at
    # import, which depends on what is cached on the machine: not required)
    assert {"HF_HOME", "XDG_CACHE_HOME"} <= reads
    assert reads & warm.UNKEYED == set() and not [name for name in reads if name.startswith("SNAKEMAKE")]


def test_a_changed_installation_gets_a_new_server(tmp_path, monkeypatch):
    monkeypatch.setattr(warm.sysconfig, "get_path", lambda name: str(tmp_path))
    before = warm.socket_path({})
    (tmp_path / "newpkg").mkdir()  # a package installed into site-packages
    os.utime(tmp_path, ns=(10**18, 10**18))  # a different mtime whatever the clock's resolution
    assert warm.socket_path({}) != before
