"""Graceful stop on SIGTERM (SLURM preemption or time limit), SIGUSR1 (`sbatch --signal=USR1@120`) or
SIGINT (Ctrl-C; a second Ctrl-C interrupts at once).

The signal handler only sets a flag; the training loop calls :func:`check` after each
batch and between trials, which raises :class:`Preempted`. By then the trial's state of its
last finished epoch is on disk (``resume.pt``), so the process can exit at once and a rerun
continues the same trial from that epoch.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
_received: list[int] = []


class Preempted(BaseException):
    """Raised at a safe point after a stop signal. A BaseException, so no ``except Exception`` takes it for a failed trial."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _handler(signum, frame) -> None:  # noqa: ARG001 (signal handler signature)
    if signum == signal.SIGINT and signal.SIGINT in _received:
        raise KeyboardInterrupt  # the second Ctrl-C: stop now (the trial is still resumable from its last epoch)
    _received.append(signum)


@contextmanager
def stop_on_signals(signals=SIGNALS):
    """Within the block, the given signals request a stop instead of killing the process."""
    previous = {s: signal.signal(s, _handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        _received.clear()


def requested() -> bool:
    """Whether a stop signal arrived."""
    return bool(_received)


def first_signal() -> int:
    """The first stop signal received (call only when :func:`requested`)."""
    return _received[0]


def check() -> None:
    """Raise :class:`Preempted` if a stop signal arrived."""
    if _received:
        raise Preempted(_received[0])
