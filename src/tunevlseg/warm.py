"""Warm start for short CPU jobs: fork each `tunevlseg` command from one process that has torch imported.

On the 2-core demo every training job is a fresh Python process that spends ~8 s importing torch and
transformers' CLIPSeg (`python -X importtime`: torch 2.4 s; transformers' modelling utilities pull in
torch._dynamo, torch.distributed.tensor and scipy.optimize) to train for 3-10 s. With
``TUNEVLSEG_WARM=1`` (set by ``make demo``) the `tunevlseg` command instead asks a local server, which
imported those libraries once, to fork a job process; the command's output, exit status and signals
are the same as without it:

* the client passes its stdin/stdout/stderr (file descriptors, over a Unix socket), argv, working directory
  and environment; the job process runs with exactly those, re-seeds Python's and numpy's global
  generators (as a fresh process would be) and imports tunevlseg's own code after the fork, so an
  edited source file is never stale;
* SIGTERM, SIGINT, SIGUSR1 and SIGHUP sent to the client are forwarded to the job process (graceful
  preemption, ``tunevlseg.preempt``); if the client dies (kill -9), the job process is killed too, so
  nothing keeps writing behind a scheduler's back;
* the first command finds no server: it starts one in the background and runs in-process itself; a
  server lives until it has had no job for ``TUNEVLSEG_WARM_IDLE`` seconds (default 120) or its socket
  file is removed.

The server is keyed by the Python executable, the state of its site-packages and the environment variables
read at import time (``HF_*``, ``TORCH*``, ``OMP_*``, ``CUDA*``, ``PYTHON*`` ...), so a different environment
or a changed installation gets its own.
It is used only on Linux and only for jobs that run on the CPU: forking after CUDA is initialised is not
safe, so a job whose device is ``auto`` on a machine with a GPU runs as a plain process.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib
import json
import os
import select
import signal
import socket
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
#: the commands worth a warm start (the rest import little)
COMMANDS = frozenset({"pretrain", "features", "tune", "retrain"})
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
_KEY_PREFIXES = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TOKENIZERS", "TORCH", "PYTORCH", "OMP_", "MKL", "KMP_",
                 "OPENBLAS", "CUDA", "NVIDIA", "PYTHON", "TUNEVLSEG_WARM", "LD_")
_HEADER = struct.Struct("!I")


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
    """Whether this command should run in a warm job process: enabled, worth it and on the CPU."""
    if not enabled() or command not in COMMANDS:
        return False
    try:
        device = json.loads(settings or "{}").get("device", "auto")
    except (json.JSONDecodeError, AttributeError):
        return False  # the command itself reports bad settings
    return device == "cpu" or (device == "auto" and not gpu_present())


def socket_path(env: dict | None = None) -> Path:
    """The server's socket for this interpreter and import-time environment."""
    env = os.environ if env is None else env
    keyed = sorted((k, v) for k, v in env.items() if k.startswith(_KEY_PREFIXES))
    try:  # installing or removing a package changes site-packages: a new server, not one with stale imports
        installed = os.stat(sysconfig.get_path("purelib")).st_mtime_ns
    except OSError:
        installed = None
    key = json.dumps([sys.executable, sys.prefix, installed, str(Path(__file__).resolve().parent), keyed])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir())
    name = f"tunevlseg-warm-{os.getuid()}-{digest}.sock"
    if len(str(folder / name)) + 12 > 107 and Path("/tmp").is_dir():  # AF_UNIX paths: 107 bytes (+ staging suffix)
        folder = Path("/tmp")
    return folder / name


# ---------------------------------------------------------------- client


def call(argv: list[str], entry: str = "tunevlseg.cli:run_local", path: Path | None = None) -> int | None:
    """Run ``entry(argv)`` in a job process forked by the warm server; its exit status.

    None when no server answers (one is started for the next command): the caller runs in-process.
    """
    path = socket_path() if path is None else path
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        start_server(path)
        return None
    job: list[int] = []  # the job's pid, once the server sent it
    pending: list[int] = []  # signals that came before it

    def forward(signum, _frame):
        if job:
            _forward(job[0], signum)
        else:
            pending.append(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        with conn:
            request = json.dumps({"argv": list(argv), "entry": entry, "cwd": os.getcwd(), "env": dict(os.environ)})
            payload = request.encode()
            socket.send_fds(conn, [_HEADER.pack(len(payload)) + payload], [0, 1, 2])
            replies = conn.makefile("r")
            line = replies.readline()
            if not line:
                return None  # the server went away before forking: run in-process
            job.append(json.loads(line)["pid"])
            for signum in pending:
                _forward(job[0], signum)
            line = replies.readline()
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        if pending and not job:
            signal.raise_signal(pending[0])  # never forwarded: act on it here, as the plain process would
    if not line:
        print(f"tunevlseg: the warm job process {job[0]} ended without a status (its server was killed)",
              file=sys.stderr)
        return 1
    status = json.loads(line)["status"]
    return status if status >= 0 else 128 - status  # killed by signal N: 128 + N, as a shell reports it


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def start_server(path: Path) -> None:
    """Start a server in the background unless one is starting (it checks again under its lock)."""
    lock = _lock(path, blocking=False)
    if lock is None:
        return
    lock.close()
    env = dict(os.environ)
    env.pop(ENV_FLAG, None)
    with open(f"{path}.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "tunevlseg.warm", str(path)], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True, env=env, close_fds=True)


def _lock(path: Path, blocking: bool):
    handle = open(f"{path}.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        handle.close()
        return None
    return handle


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


def serve(path: Path, preload=None, idle_s: float | None = None) -> None:
    """Import ``preload`` (default: ``TUNEVLSEG_WARM_PRELOAD``, comma-separated, else :data:`PRELOAD`), then fork
    one job process per connection until idle for ``idle_s`` seconds (default ``TUNEVLSEG_WARM_IDLE`` or 120)."""
    if preload is None:
        listed = os.environ.get("TUNEVLSEG_WARM_PRELOAD")
        preload = PRELOAD if listed is None else [name.strip() for name in listed.split(",") if name.strip()]
    idle_s = float(os.environ.get("TUNEVLSEG_WARM_IDLE", 120)) if idle_s is None else idle_s
    lock = _lock(path, blocking=True)
    try:
        if _answers(path):
            return  # another server is up
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = f"{path}.{os.getpid()}"
        listener.bind(staging)  # before the imports: a path that cannot be bound fails at once
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
        inode = os.stat(path).st_ino
    finally:
        lock.close()
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
            pid = os.fork()
            if pid == 0:
                listener.close()
                _supervise(conn)  # never returns
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
        raise ConnectionError("malformed warm request")
    (size,) = _HEADER.unpack_from(data)
    data = data[_HEADER.size:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("warm request cut short")
        data += chunk
    return json.loads(data), fds


def _supervise(conn: socket.socket) -> None:
    """In the forked process: run the request in a child, report its pid and status; kill it if the client goes."""
    code = 1
    try:
        conn.settimeout(None)
        request, fds = _recv_request(conn)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run_job(request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        print(f"warm: job {pid}: {' '.join(request['argv'][:1])} in {request['cwd']}", file=sys.stderr, flush=True)
        conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
        status = _wait(pid, conn)
        if status is not None:
            conn.sendall((json.dumps({"status": status}) + "\n").encode())
        code = 0
    except EOFError:
        code = 0
    except Exception as err:  # noqa: BLE001 (report and end this supervisor only)
        print(f"warm: job failed to start: {err!r}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _wait(pid: int, conn: socket.socket) -> int | None:
    """The job's exit code (negative: killed by that signal), or None after killing it because the client left."""
    try:
        watched = os.pidfd_open(pid)
    except (AttributeError, OSError):
        watched = None
    while True:
        ready, _, _ = select.select([conn] + ([watched] if watched is not None else []), [], [],
                                    None if watched is not None else 0.2)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if conn in ready and not conn.recv(1):  # EOF: the client is gone (killed)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None


def _run_job(request: dict, fds: list[int]) -> None:
    """In the job process: become the client's process (fds, cwd, env, fresh RNGs), run the entry, exit."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for s in FORWARDED:
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # recomputed from the client's TMPDIR
        sys.argv = ["tunevlseg", *request["argv"]]
        try:  # `ps -o comm`/`top` show the command, not the server's name
            Path("/proc/self/comm").write_text(f"tunevlseg-{request['argv'][0]}"[:15] if request["argv"] else "tunevlseg")
        except OSError:
            pass
        import random

        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        module, _, function = request["entry"].partition(":")
        code = getattr(importlib.import_module(module), function)(request["argv"])
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
    except OSError as err:
        if err.errno not in (errno.EADDRINUSE, errno.ENOENT):
            raise
