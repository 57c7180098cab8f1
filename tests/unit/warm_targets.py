"""Entry points the warm-start tests run in forked job processes (``tunevlseg.warm.call(..., entry=...)``)."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path


def report(argv: list[str]) -> int:
    """Print what the job process sees; exit with status ``argv[0]``."""
    print(json.dumps({"pid": os.getpid(), "cwd": os.getcwd(), "marker": os.environ.get("WARM_TEST_MARKER"),
                      "argv": argv, "sys_argv": sys.argv, "random": random.random()}))
    print("a line on stderr", file=sys.stderr)
    return int(argv[0])


def wait_for_stop(argv: list[str]) -> int:
    """Write the pid to ``argv[0]``, then wait for a stop signal the way training does."""
    from tunevlseg import preempt

    with preempt.stop_on_signals():
        Path(argv[0]).write_text(str(os.getpid()))
        while not preempt.requested():
            time.sleep(0.02)
        signum = preempt.first_signal()
    print(f"stopped by {signal.Signals(signum).name}", flush=True)
    return 128 + signum


def sleep_forever(argv: list[str]) -> int:
    Path(argv[0]).write_text(str(os.getpid()))
    time.sleep(600)
    return 0


def at_exit(argv: list[str]) -> int:
    """Register an exit handler that writes ``argv[0]``, report the temporary folder, exit 0."""
    import atexit
    import tempfile

    atexit.register(lambda: Path(argv[0]).write_text("ran"))
    print(tempfile.gettempdir())
    return 0
