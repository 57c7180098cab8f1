"""A job's running marker: says on the rerun that the previous run of the same job was killed, and how big it was.

A process the kernel's OOM killer ends gets SIGKILL: nothing runs, its log stops mid progress bar, and only the
kernel log says why. So each training job (``tune``, ``retrain``, ``features``, ``pretrain``) writes a marker
file with its pid when it starts, records its peak memory in it every :data:`INTERVAL_S` seconds, and removes
it when it exits — after an error or a stop signal too. A marker whose process no longer runs was left by a
run that was killed by SIGKILL (most often the OOM killer) or by a machine that went down; the next run of
the same job logs that, with the peak memory recorded so far, before it starts.

Memory figures come from ``/proc`` (Linux; elsewhere the marker holds none): ``peak_rss_mb`` is the job
process's own peak resident set (the kernel's ``VmHWM``), ``peak_total_mb`` the largest sampled proportional
set (PSS) of the job's process and its descendants together (DataLoader workers, their fork server).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .data.atomic import atomic_write

log = logging.getLogger(__name__)
#: Seconds between two memory samples (each rewrites the marker).
INTERVAL_S = 5.0


def _proc_fields(pid: int | str, name: str, keys: tuple[str, ...]) -> dict[str, int]:
    """kB fields of ``/proc/<pid>/<name>`` (status, smaps_rollup); {} when unreadable."""
    out = {}
    try:
        with open(f"/proc/{pid}/{name}") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in keys:
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): a pid reused by another process has another one."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """The pids of the process's children, their children, … (from ``/proc``)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def memory_now(pid: int | None = None) -> dict[str, float]:
    """``rss_mb`` (the process's peak RSS so far, VmHWM) and ``total_mb`` (PSS of it and its descendants
    now; RSS where PSS is unreadable); {} without ``/proc``."""
    pid = os.getpid() if pid is None else pid
    own = _proc_fields(pid, "status", ("VmHWM", "VmRSS"))
    if not own:
        return {}
    total = 0
    for p in (pid, *descendants(pid)):
        fields = _proc_fields(p, "smaps_rollup", ("Pss",)) or _proc_fields(p, "status", ("VmRSS",))
        total += next(iter(fields.values()), 0)
    return {"rss_mb": round(own.get("VmHWM", own.get("VmRSS", 0)) / 1024, 1), "total_mb": round(total / 1024, 1)}


def alive(record: dict) -> bool | None:
    """Whether the marker's process still runs: None when it ran on another host (cannot be checked here)."""
    if record.get("host") != socket.gethostname():
        return None
    pid = record.get("pid")
    return isinstance(pid, int) and start_ticks(pid) is not None and start_ticks(pid) == record.get("start_ticks")


def killed_message(path: Path, record: dict) -> str:
    """What the rerun says about the run that left ``record`` in ``path``."""
    where = f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started', '?')}"
    peak = record.get("peak_rss_mb")
    memory = (f"peak RSS so far {peak:.0f} MB; with its workers at most {record.get('peak_total_mb') or peak:.0f} MB PSS"
              if isinstance(peak, (int, float)) else "no memory figure recorded")
    return (f"the previous run of this job ({where}) was killed (SIGKILL — most often the kernel's OOM killer; "
            f"{memory}; set mem_mb / lower batch_size); its marker: {path}")


def check_previous(path: Path) -> str | None:
    """The message about a previous run that left ``path`` behind without exiting; None when there is none.
    A marker of a process still running on this host is reported as such (two runs of one job)."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"the previous run of this job left an unreadable marker {path}: it did not exit cleanly"
    state = alive(record)
    if state:
        return f"{path}: another run of this job is running now (pid {record.get('pid')}); both write its outputs"
    return killed_message(path, record)


class _Marker:
    def __init__(self, path: Path, command: str):
        self.path, self.stop = Path(path), threading.Event()
        pid = os.getpid()
        self.record = {"pid": pid, "start_ticks": start_ticks(pid), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
                       "peak_rss_mb": None, "peak_total_mb": None}

    def sample(self) -> None:
        now = memory_now()
        if now:
            self.record["peak_rss_mb"] = max(now["rss_mb"], self.record["peak_rss_mb"] or 0.0)
            self.record["peak_total_mb"] = max(now["total_mb"], self.record["peak_total_mb"] or 0.0)
        self.record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with atomic_write(self.path) as tmp:
            tmp.write_text(json.dumps(self.record, indent=1) + "\n")

    def run(self, interval: float) -> None:
        while not self.stop.wait(interval):
            try:
                self.sample()
            except OSError as err:  # a full disk must not stop the training: the marker is advisory
                log.debug("running marker %s: %s", self.path, err)


def marker_path(command: str, out: str | Path, worker: int | None = None, replicate: int | None = None) -> Path:
    """Where the job writing ``out`` keeps its marker: in the cell folder for ``tune`` (one per parallel
    worker) and ``retrain`` (one per replicate), beside the output folder otherwise (a failed job's output
    folder is removed by Snakemake; the marker must survive it)."""
    out = Path(out)
    if command == "tune":
        return out / ("running.json" if worker is None else f"running.worker{worker}.json")
    if command == "retrain":
        return out / f"running.seed{replicate}.json"
    return out.parent / f"{out.name}.running.json"


@contextmanager
def running_marker(path: Path, command: str = "", interval: float = INTERVAL_S):
    """Within the block: ``path`` holds this process's pid and its peak memory (updated every ``interval``
    seconds); removed when the block exits, however it exits except by SIGKILL. On entry, a marker left by an
    earlier run that did not exit is reported (a warning in the job's log) and replaced."""
    path = Path(path)
    message = check_previous(path)
    if message:
        log.warning(message)
    made = not path.parent.exists()  # a job that fails before writing anything leaves no folder behind
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = _Marker(path, command)
    marker.sample()
    thread = threading.Thread(target=marker.run, args=(interval,), name="running-marker", daemon=True)
    thread.start()
    try:
        yield marker
    finally:
        marker.stop.set()
        thread.join()
        path.unlink(missing_ok=True)
        if made:
            try:
                path.parent.rmdir()  # only when empty
            except OSError:
                pass


__all__ = ["INTERVAL_S", "alive", "check_previous", "descendants", "killed_message", "marker_path", "memory_now",
           "running_marker",
           "start_ticks"]
