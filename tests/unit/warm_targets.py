"""Entry points the warm-start tests run in forked job processes (``tunevlseg.warm.serve(..., entries=...)``);
each is called as ``function(argv, command)``, and as a plain process with ``python -m tests.unit.warm_targets``."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sys
import time
from pathlib import Path


def report(argv: list[str], command: str) -> int:
    """Print what the job process sees; exit with status ``argv[0]``."""
    print(json.dumps({"pid": os.getpid(), "cwd": os.getcwd(), "marker": os.environ.get("WARM_TEST_MARKER"),
                      "argv": argv, "sys_argv": sys.argv, "random": random.random(), "command": command}))
    print("a line on stderr", file=sys.stderr)
    return int(argv[0])


def attributes(argv: list[str], command: str) -> int:  # noqa: ARG001
    """Print the process attributes a job must take on from its command; write a file to show the umask."""
    Path(argv[0]).write_text("")
    print(json.dumps({"umask": oct(os.stat(argv[0]).st_mode & 0o777), "nice": os.getpriority(os.PRIO_PROCESS, 0),
                      "as": resource.getrlimit(resource.RLIMIT_AS), "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
                      "affinity": sorted(os.sched_getaffinity(0)),
                      "sighup": int(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN),
                      "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))}))
    return 0


def wait_for_stop(argv: list[str], command: str) -> int:  # noqa: ARG001
    """Write the pid to ``argv[0]``, then wait for a stop signal the way training does."""
    from tunevlseg import preempt

    with preempt.stop_on_signals():
        Path(argv[0]).write_text(str(os.getpid()))
        while not preempt.requested():
            time.sleep(0.02)
        signum = preempt.first_signal()
    print(f"stopped by {signal.Signals(signum).name}", flush=True)
    return 128 + signum


def sleep_forever(argv: list[str], command: str) -> int:  # noqa: ARG001
    Path(argv[0]).write_text(str(os.getpid()))
    time.sleep(600)
    return 0


def tick(argv: list[str], command: str) -> int:  # noqa: ARG001
    """Write the pid to ``argv[0]``, then a growing count to ``argv[1]`` every 20 ms, ``argv[2]`` seconds' worth of
    ticks (counted, not timed: time spent stopped does not use them up)."""
    Path(argv[0]).write_text(str(os.getpid()))
    for count in range(1, int(float(argv[2]) / 0.02) + 1):
        Path(argv[1]).write_text(str(count))
        time.sleep(0.02)
    return 0


def at_exit(argv: list[str], command: str) -> int:  # noqa: ARG001
    """Register an exit handler that writes ``argv[0]``, report the temporary folder, exit 0."""
    import atexit
    import tempfile

    atexit.register(lambda: Path(argv[0]).write_text("ran"))
    print(tempfile.gettempdir())
    return 0


if __name__ == "__main__":  # a plain process: python -m tests.unit.warm_targets <function> <args...>
    sys.exit(globals()[sys.argv[1]](sys.argv[2:], sys.argv[1]))
