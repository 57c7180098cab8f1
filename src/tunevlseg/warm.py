"""Warm start for short CPU jobs: fork each `tunevlseg` command from one process that has torch imported.

On the 2-core demo every training job is a fresh Python process that spends ~8 s importing torch and
transformers' CLIPSeg (`python -X importtime`: torch 2.4 s; transformers' modelling utilities pull in
torch._dynamo, torch.distributed.tensor and scipy.optimize) to train for 3-10 s. With
``TUNEVLSEG_WARM=1`` (set by ``make demo``) the `tunevlseg` command instead asks a local server, which
imported those libraries once, to fork a job process; the command's output, exit status and signals
are the same as without it:

* the client passes its stdin/stdout/stderr (file descriptors, over a Unix socket), argv, working directory,
  environment and process attributes (umask, nice value, resource limits, CPU affinity, ignored and blocked
  signals); the job process runs with exactly those, re-seeds Python's and numpy's global generators (as a
  fresh process would be) and imports tunevlseg's own code after the fork, so an edited source file is never
  stale. Attributes the job cannot take on (a lower nice value, a higher hard limit, another group or
  control group) make the command run as a plain process;
* SIGTERM, SIGINT, SIGUSR1 and SIGHUP sent to the client are forwarded to the job process (graceful
  preemption, ``tunevlseg.preempt``); a stopped client (SIGSTOP, SIGTSTP) stops the job until it continues;
  if the client dies (kill -9), its supervisor kills the job, and if the supervisor dies the kernel does
  (``PR_SET_PDEATHSIG``), so nothing keeps writing behind a scheduler's back;
* the first command finds no server: it starts one in the background and runs in-process itself; a
  server lives until it has had no job for ``TUNEVLSEG_WARM_IDLE`` seconds (default 120) or its socket
  file is removed.

Security model: the socket, its lock and log live in a folder only the user can enter
(``$XDG_RUNTIME_DIR/tunevlseg-warm``, else ``<tempdir>/tunevlseg-warm-<uid>``; created 0700, and owner, mode
and no symlink checked on every use, else the command runs plain with one warning line); both ends check the
peer's uid (``SO_PEERCRED``), the client also the server's pid and that the job descends from it; the server
runs only the commands of :data:`ENTRIES` (no module named by a request) and starts with ``python -P`` in
that folder, so no module in a working directory shadows its imports. Not used under a batch scheduler.

The server is keyed by the Python executable, the state of its site-packages and the whole environment but
for the few variables of :data:`UNKEYED` (the preloaded libraries read hundreds at import time: ``HF_*``,
``TORCH*``, ``XDG_CACHE_HOME``, ``TMPDIR``, ``TQDM_*`` ...), so a different environment or a changed
installation gets its own.
It is used only on Linux and only for jobs that run on the CPU: forking after CUDA is initialised is not
safe, so a job whose device is ``auto`` on a machine with a GPU runs as a plain process.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import importlib
import json
import os
import resource
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ENV_FLAG = "TUNEVLSEG_WARM"
#: what the server imports before it accepts jobs (missing ones are skipped)
PRELOAD = (
    "numpy",
    "torch",
    "transformers.models.clipseg.modeling_clipseg",
    "transformers.models.auto.tokenization_auto",
    "tokenizers",
    "optuna",
    "pandas",
    "filelock",
    "tqdm.auto",
)
#: the only jobs a server runs, by command name: ``module:function``, called as ``function(argv, command)``
ENTRIES = {name: "tunevlseg.cli:run_local" for name in ("pretrain", "features", "tune", "retrain")}
#: the commands worth a warm start (the rest import little)
COMMANDS = frozenset(ENTRIES)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
#: set inside a batch scheduler's job: it runs plain (the scheduler accounts for and signals its own process)
SCHEDULER_VARS = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")
#: the environment variables that do not pick the server: different from job to job and not read by the
#: preloaded libraries at import time (tests/unit/test_warm.py checks); every other one is part of the key
UNKEYED = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "PATH", ENV_FLAG})
_UNKEYED_PREFIXES = ("SNAKEMAKE",)
_RLIMITS = tuple(sorted(name for name in dir(resource) if name.startswith("RLIMIT_")))
_HEADER = struct.Struct("!I")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Refused(Exception):
    """The warm start is not safe or not faithful here: the command runs as a plain process."""


def _warn(reason: object) -> None:
    print(f"tunevlseg: warm start not used: {reason}; running as a plain process", file=sys.stderr, flush=True)


def enabled() -> bool:
    return os.environ.get(ENV_FLAG) == "1" and sys.platform.startswith("linux")


def gpu_present() -> bool:
    """Whether torch could find a GPU here (then no fork after import: CUDA is not fork-safe).

    The machine's GPUs as the GPU-slot allocator lists them, or a device file without ``nvidia-smi``."""
    if any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists():
        return True
    from .gpu_slots import available_gpus

    return bool(available_gpus())


def wants_warm(command: str, settings: str | None) -> bool:
    """Whether this command should run in a warm job process: enabled, worth it, on the CPU, no scheduler."""
    if not enabled() or command not in COMMANDS or any(os.environ.get(name) for name in SCHEDULER_VARS):
        return False
    try:
        device = json.loads(settings or "{}").get("device", "auto")
    except (json.JSONDecodeError, AttributeError):
        return False  # the command itself reports bad settings
    return device == "cpu" or (device == "auto" and not gpu_present())


# ---------------------------------------------------------------- the private folder


def check_private(folder: Path) -> None:
    """Refused unless ``folder`` is a folder (not a symlink) owned by this user, mode 0700."""
    try:
        info = os.lstat(folder)
    except OSError as err:
        raise Refused(f"{folder}: {err.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise Refused(f"{folder} is not a folder (a symlink or a file)")
    if info.st_uid != os.getuid():
        raise Refused(f"{folder} belongs to uid {info.st_uid}, not to uid {os.getuid()}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        raise Refused(f"{folder} has mode {stat.S_IMODE(info.st_mode):04o}, not 0700")


def _make_private(folder: Path) -> Path:
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass  # checked below: it must be the user's own, as if just made
    except OSError as err:
        raise Refused(f"cannot create {folder}: {err.strerror}") from None
    check_private(folder)
    return folder


def private_dir() -> Path:
    """The user's own folder for the server's socket, lock and log: ``$XDG_RUNTIME_DIR/tunevlseg-warm`` when that
    is the user's private folder, else ``<tempdir>/tunevlseg-warm-<uid>``; Refused when it is not private."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        try:
            check_private(Path(runtime))
        except Refused:
            pass  # not the user's own: the temporary folder instead
        else:
            return _make_private(Path(runtime) / "tunevlseg-warm")
    folder = Path(tempfile.gettempdir()) / f"tunevlseg-warm-{os.getuid()}"
    if len(str(folder)) > 60 and Path("/tmp").is_dir():  # AF_UNIX paths: 107 bytes (+ name, staging suffix)
        folder = Path("/tmp") / folder.name
    return _make_private(folder)


def socket_path(env: dict | None = None) -> Path:
    """The server's socket for this interpreter and import-time environment (in :func:`private_dir`)."""
    env = os.environ if env is None else env
    keyed = sorted((k, v) for k, v in env.items() if k not in UNKEYED and not k.startswith(_UNKEYED_PREFIXES))
    try:  # installing or removing a package changes site-packages: a new server, not one with stale imports
        installed = os.stat(sysconfig.get_path("purelib")).st_mtime_ns
    except OSError:
        installed = None
    # a job cannot change its group ids or control group: commands that differ in them get their own server
    ids = [os.getgid(), os.getegid(), sorted(os.getgroups()), _read("/proc/self/cgroup")]
    key = json.dumps([sys.executable, sys.prefix, installed, str(Path(__file__).resolve().parent), keyed, ids])
    return private_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.sock"


def _check_pythonpath() -> None:
    entries = os.environ.get("PYTHONPATH")
    if entries and not all(os.path.isabs(entry) for entry in entries.split(os.pathsep)):
        raise Refused("PYTHONPATH has a relative or empty entry (what it imports depends on the working folder)")


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    """The pid, uid and gid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    return _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# ---------------------------------------------------------------- client


def call(argv: list[str], command: str | None = None, path: Path | None = None) -> int | None:
    """Run ``command`` (default ``argv[0]``) with ``argv`` in a job process forked by the warm server; its status.

    None when the caller should run in-process: no server answered (one is started for the next command), or
    the warm start is not safe or faithful here (one warning line says why).
    """
    command = argv[0] if command is None else command
    try:
        path = socket_path() if path is None else Path(os.path.abspath(path))
        check_private(path.parent)
        _check_pythonpath()
        conn, server = _connect(path)
    except Refused as err:
        _warn(err)
        return None
    if conn is None:
        start_server(path)
        return None
    with conn:
        return _run_remote(conn, server, command, argv)


def _connect(path: Path) -> tuple[socket.socket | None, int]:
    """A connection to the server at ``path`` and the server's pid; (None, 0) when none listens there."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None, 0
    pid, uid, _gid = _peer(conn)
    if uid != os.getuid():
        conn.close()
        raise Refused(f"{path} is served by uid {uid}, not by uid {os.getuid()}")
    return conn, pid


def process_state() -> dict:
    """What a plain process would inherit from this one besides stdio, cwd and environment: the job takes it on."""
    catchable = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]
    umask = next((int(line.split()[1], 8) for line in _read("/proc/self/status").splitlines()
                  if line.startswith("Umask:")), None)
    if umask is None:
        umask = os.umask(0o077)
        os.umask(umask)
    return {"umask": umask, "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "rlimits": {name: list(resource.getrlimit(getattr(resource, name))) for name in _RLIMITS},
            "affinity": sorted(os.sched_getaffinity(0)),
            "ignored": [int(s) for s in catchable if signal.getsignal(s) == signal.SIG_IGN],
            "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
            "ids": [os.getgid(), os.getegid(), sorted(os.getgroups())], "cgroup": _read("/proc/self/cgroup")}


def _run_remote(conn: socket.socket, server: int, command: str, argv: list[str]) -> int | None:
    state = process_state()  # before the forwarding handlers below go in
    job: list[tuple[int, int]] = []  # (pidfd, pid) of the job, once checked
    pending: list[int] = []  # signals that came before it

    def forward(signum, _frame):
        if job:
            _send(job[0][0], signum)
        else:
            pending.append(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED if signal.getsignal(s) != signal.SIG_IGN}
    try:
        request = json.dumps({"command": command, "argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ),
                              "state": state}).encode()
        replies = conn.makefile("r")
        try:
            socket.send_fds(conn, [_HEADER.pack(len(request)) + request], [0, 1, 2])
        except OSError:
            return None  # the server went away: run in-process
        reply = _reply(replies)
        if reply is None:
            return None  # the server went away before forking: run in-process
        if "refused" in reply:
            _warn(reply["refused"])
            return None
        try:
            job.append(_check_job(reply, server))
        except Refused as err:
            _warn(err)
            return None  # the connection closes: the supervisor kills the job before it started
        try:
            conn.sendall(b"g")
        except OSError:
            pass  # the supervisor died: no status below
        for signum in pending:
            _send(job[0][0], signum)
        reply = _reply(replies)
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        if pending and not job:
            signal.raise_signal(pending[0])  # never forwarded: act on it here, as the plain process would
    pidfd, pid = job[0]
    try:
        if reply is None:
            select.select([pidfd], [], [], 10)  # the supervisor died: its job is killed (PR_SET_PDEATHSIG)
            print(f"tunevlseg: the warm job process {pid} ended without a status (its supervisor was killed)",
                  file=sys.stderr)
            return 1
    finally:
        os.close(pidfd)
    status = reply["status"]
    return status if status >= 0 else 128 - status  # killed by signal N: 128 + N, as a shell reports it


def _reply(replies) -> dict | None:
    try:
        line = replies.readline()
    except OSError:
        return None
    return json.loads(line) if line else None


def _check_job(reply: dict, server: int) -> tuple[int, int]:
    """A pidfd for the job the server reported and its pid, once the server is the socket's peer and the job its
    grandchild (server -> supervisor -> job): signals go to that process only, even if the pid is reused."""
    if reply.get("server") != server:
        raise Refused(f"the warm server says it is pid {reply.get('server')}, its socket's peer is pid {server}")
    pid = int(reply["pid"])
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as err:
        raise Refused(f"the warm job {pid}: {err.strerror}") from None
    try:
        if _parent(_parent(pid)) != server:
            raise Refused(f"the warm job {pid} is not a process of the warm server {server}")
    except (OSError, ValueError, IndexError, Refused) as err:
        os.close(pidfd)
        raise err if isinstance(err, Refused) else Refused(f"the warm job {pid} is gone") from None
    return pidfd, pid


def _send(pidfd: int, signum: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        pass


def start_server(path: Path) -> None:
    """Start a server in the background unless one is starting (it checks again under its lock).

    It runs with ``python -P`` in the private folder, so no module in the command's working folder is imported."""
    try:
        lock = _lock(path, blocking=False)
        if lock is None:
            return
        os.close(lock)
        log = os.open(f"{path}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        _warn(f"{err.filename or path}: {err.strerror}")
        return
    env = dict(os.environ)
    env.pop(ENV_FLAG, None)
    try:
        subprocess.Popen([sys.executable, "-P", "-m", "tunevlseg.warm", str(path)], cwd=path.parent,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env,
                         close_fds=True)
    finally:
        os.close(log)


def _lock(path: Path, blocking: bool) -> int | None:
    """The server lock's file descriptor, held; None when another process holds it (not blocking)."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


# ---------------------------------------------------------------- server


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _open(path: Path, preload) -> tuple[socket.socket, int] | None:
    """Under the lock: bind, import ``preload``, listen at ``path``; the listener and the socket's inode (None when
    another server answers there)."""
    lock = _lock(path, blocking=True)
    try:
        if _answers(path):
            return None  # another server is up
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = f"{path}.{os.getpid()}"
        listener.bind(staging)  # before the imports: a path that cannot be bound fails at once
        os.chmod(staging, 0o600)
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the server itself never initialises CUDA (jobs get their env)
        for name in preload:
            try:
                importlib.import_module(name)
            except Exception as err:  # noqa: BLE001 (a missing optional library only costs its import time)
                print(f"warm: not preloaded {name}: {err}", file=sys.stderr)
        sys.stdout.flush()  # nothing buffered before a fork is written twice
        sys.stderr.flush()
        listener.listen(64)
        os.replace(staging, path)
        return listener, os.stat(path).st_ino
    finally:
        if lock is not None:
            os.close(lock)


def serve(path: Path, preload=None, idle_s: float | None = None, entries: dict[str, str] | None = None) -> None:
    """Import ``preload`` (default: ``TUNEVLSEG_WARM_PRELOAD``, comma-separated, else :data:`PRELOAD`), then fork
    one job process per connection of this user until idle for ``idle_s`` seconds (default ``TUNEVLSEG_WARM_IDLE``
    or 120). A job runs one of ``entries`` (default :data:`ENTRIES`), picked by the request's command name."""
    if preload is None:
        listed = os.environ.get("TUNEVLSEG_WARM_PRELOAD")
        preload = PRELOAD if listed is None else [name.strip() for name in listed.split(",") if name.strip()]
    idle_s = float(os.environ.get("TUNEVLSEG_WARM_IDLE", 120)) if idle_s is None else idle_s
    entries = ENTRIES if entries is None else entries
    check_private(path.parent)
    os.umask(0o077)  # the server's own files; a job gets its command's umask
    opened = _open(path, preload)
    if opened is None:
        return
    listener, inode = opened
    print(f"warm: serving on {path} (pid {os.getpid()}, {time.process_time():.1f} s of imports)", file=sys.stderr,
          flush=True)
    listener.settimeout(1.0)
    children: set[int] = set()
    last_busy = time.monotonic()
    try:
        while True:
            for pid in list(children):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    children.discard(pid)
            if children:
                last_busy = time.monotonic()
            if not children and time.monotonic() - last_busy > idle_s:
                return
            try:
                if os.stat(path).st_ino != inode:
                    return  # removed or replaced: stop
            except FileNotFoundError:
                return
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            client, uid, _gid = _peer(conn)
            if uid != os.getuid():
                print(f"warm: refused a connection from uid {uid} (pid {client})", file=sys.stderr, flush=True)
                conn.close()
                continue
            server = os.getpid()
            pid = os.fork()
            if pid == 0:
                listener.close()
                _supervise(conn, entries, server, client)  # never returns
            conn.close()
            children.add(pid)
            last_busy = time.monotonic()
    finally:
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except FileNotFoundError:
            pass


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    if not data and not fds:
        raise EOFError  # a probe (`_answers`): connected and closed
    if len(data) < _HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ConnectionError("malformed warm request")
    (size,) = _HEADER.unpack_from(data)
    data = data[_HEADER.size:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("warm request cut short")
        data += chunk
    return json.loads(data), fds


def _refusal(request: dict, entries: dict[str, str]) -> str | None:
    """Why the request cannot run here (None: it can): an unknown command, or attributes the job cannot take on."""
    command, argv = request.get("command"), request.get("argv")
    if command not in entries:
        return f"{command!r} is not a command the warm server runs"
    if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
        return "malformed argv"
    state = request["state"]
    if state["ids"] != [os.getgid(), os.getegid(), sorted(os.getgroups())]:
        return "the command runs with other group ids than the warm server"
    if state["cgroup"] != _read("/proc/self/cgroup"):
        return "the command runs in another control group than the warm server"
    if not set(state["rlimits"]) <= set(_RLIMITS):
        return "unknown resource limits"
    try:  # taken on by this supervisor: the job it forks inherits them
        if os.getpriority(os.PRIO_PROCESS, 0) != state["nice"]:
            os.setpriority(os.PRIO_PROCESS, 0, state["nice"])
        for name, limit in state["rlimits"].items():
            which = getattr(resource, name)
            if resource.getrlimit(which) != tuple(limit):
                resource.setrlimit(which, tuple(limit))
        os.sched_setaffinity(0, state["affinity"])
    except (OSError, ValueError) as err:
        return f"the job cannot take on the command's nice value, limits or CPU affinity ({err})"
    os.umask(state["umask"])
    return None


def _supervise(conn: socket.socket, entries: dict[str, str], server: int, client: int) -> None:
    """In the forked process: fork the job, report its pid, start it when the client has checked it, report its
    status; kill it if the client goes, stop it while the client is stopped."""
    code = 1
    try:
        conn.settimeout(None)
        request, fds = _recv_request(conn)
        refusal = _refusal(request, entries)
        if refusal is not None:
            for fd in fds:
                os.close(fd)
            conn.sendall((json.dumps({"refused": refusal}) + "\n").encode())
            print(f"warm: refused {request.get('command')!r}: {refusal}", file=sys.stderr, flush=True)
            code = 0
            return
        go, start = os.pipe()
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            conn.close()
            os.close(start)
            _run_job(request, fds, entries[request["command"]], go, supervisor)  # never returns
        os.close(go)
        for fd in fds:
            os.close(fd)
        print(f"warm: job {pid}: {request['command']} in {request['cwd']}", file=sys.stderr, flush=True)
        conn.sendall((json.dumps({"server": server, "pid": pid}) + "\n").encode())
        if conn.recv(1) != b"g":  # the client found the answer wrong, or died
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = 0
            return
        os.write(start, b"g")
        os.close(start)
        status = _wait(pid, conn, client)
        if status is not None:
            conn.sendall((json.dumps({"status": status}) + "\n").encode())
        code = 0
    except EOFError:
        code = 0
    except Exception as err:  # noqa: BLE001 (report and end this supervisor only)
        print(f"warm: job failed to start: {err!r}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _wait(pid: int, conn: socket.socket, client: int) -> int | None:
    """The job's exit code (negative: killed by that signal), or None after killing it because the client left.

    While the client is stopped (SIGSTOP, SIGTSTP, ...) the job is stopped too, and continued with it."""
    try:
        watched = os.pidfd_open(pid)
    except (AttributeError, OSError):
        watched = None
    stopped = False
    while True:
        ready, _, _ = select.select([conn] + ([watched] if watched is not None else []), [], [], 0.1)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if conn in ready and not conn.recv(1):  # EOF: the client is gone (killed)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        if _stopped(client) != stopped:
            stopped = not stopped
            os.kill(pid, signal.SIGSTOP if stopped else signal.SIGCONT)


def _die_with(parent: int) -> None:
    """Be killed by the kernel when ``parent`` dies (``PR_SET_PDEATHSIG``), as if it had died first."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def _take_signals(state: dict) -> None:
    """The client's signal dispositions (ignored ones stay ignored, e.g. SIGHUP under nohup) and mask."""
    ignored = set(state["ignored"])
    for s in signal.valid_signals():
        if s in (signal.SIGKILL, signal.SIGSTOP):
            continue
        handler = signal.SIG_IGN if s in ignored else (signal.default_int_handler if s == signal.SIGINT
                                                         else signal.SIG_DFL)
        try:
            signal.signal(s, handler)
        except (OSError, ValueError):
            pass  # a signal the C library reserves
    signal.pthread_sigmask(signal.SIG_SETMASK, state["blocked"])


def _run_job(request: dict, fds: list[int], entry: str, go: int, supervisor: int) -> None:
    """In the job process: become the client's process (fds, cwd, env, signals, fresh RNGs), run the entry, exit."""
    code = 1
    try:
        _die_with(supervisor)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _take_signals(request["state"])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # recomputed from the client's TMPDIR
        sys.argv = ["tunevlseg", *request["argv"]]
        try:  # `ps -o comm`/`top` show the command, not the server's name
            Path("/proc/self/comm").write_text(f"tunevlseg-{request['command']}"[:15])
        except OSError:
            pass
        if os.read(go, 1) != b"g":
            os._exit(1)  # not started (the client declined it): nothing ran
        os.close(go)
        if os.isatty(1):
            sys.stdout.reconfigure(line_buffering=True)  # as a plain process's terminal output
        import random

        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        module, _, function = entry.partition(":")
        code = getattr(importlib.import_module(module), function)(request["argv"], request["command"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 (a traceback, as the plain process would print)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import atexit

        try:
            atexit._run_exitfuncs()  # what a plain process runs at exit (logging.shutdown, ...)
        except BaseException:  # noqa: BLE001
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    try:
        serve(Path(sys.argv[1]))
    except Refused as refused:
        sys.exit(f"warm: not serving: {refused}")
    except OSError as err:
        if err.errno not in (errno.EADDRINUSE, errno.ENOENT):  # another server won the race / the folder went
            raise
