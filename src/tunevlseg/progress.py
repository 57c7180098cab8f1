"""`tunevlseg status`: how far every cell of the grid is, read from the cell folders (never written).

Per cell: trials finished / planned (``tuning.n_trials``; one evaluation for an untuned method), seed
replicates written / planned (``tuning.final_seeds``), the best validation Dice so far, whether a worker is running it now (a RUNNING trial whose ``trials/NNN/owner.lock``
is held: :mod:`tunevlseg.tune`), and an ETA from the finished trials' durations. The Optuna journal is read
as plain JSON lines, so nothing is locked, repaired or created, and neither Optuna nor torch is imported.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .cells import ROW_SEP, CellFiles, Grid

#: Optuna's journal operation codes and trial states (``optuna.storages.journal``, ``optuna.trial.TrialState``).
CREATE_TRIAL, SET_TRIAL_STATE, SET_TRIAL_USER_ATTR = 4, 6, 8
STATES = {0: "RUNNING", 1: "COMPLETE", 2: "PRUNED", 3: "FAIL", 4: "WAITING"}
#: States that count towards ``n_trials`` (as in :data:`tunevlseg.tune.FINISHED`).
FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class Trial:
    number: int
    state: str = "RUNNING"
    val_dice: float | None = None
    duration_s: float | None = None


@dataclass
class CellStatus:
    """One cell's progress; ``eta_s`` is None when no trial has finished yet (nothing to time)."""

    cell: tuple[str, str, str]
    planned: int
    trials: list[Trial] = field(default_factory=list)
    running: int = 0
    finished_cell: bool = False
    seeds_planned: int = 1
    seeds_done: int = 0

    @property
    def done(self) -> int:
        return sum(t.state in FINISHED for t in self.trials)

    @property
    def best_val_dice(self) -> float | None:
        values = [t.val_dice for t in self.trials if t.state == "COMPLETE" and t.val_dice is not None]
        return max(values) if values else None

    @property
    def durations(self) -> list[float]:
        return [t.duration_s for t in self.trials if t.state in FINISHED and t.duration_s is not None]

    @property
    def remaining(self) -> int:
        return 0 if self.finished_cell else max(self.planned - self.done, 0)

    def eta_s(self, fallback: float | None = None) -> float | None:
        """Remaining trials × the mean finished duration (else ``fallback``), shared by the running workers."""
        if not self.remaining:
            return 0.0
        mean = statistics.fmean(self.durations) if self.durations else fallback
        return None if mean is None else self.remaining * mean / max(self.running, 1)


def read_journal(path: Path) -> list[Trial]:
    """The trials of an Optuna journal file, in number order (a torn last line is ignored)."""
    trials: dict[int, Trial] = {}
    started: dict[int, str] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                op = json.loads(line)
            except json.JSONDecodeError:
                continue
            code = op.get("op_code")
            if code == CREATE_TRIAL:
                number = len(trials)
                trials[number] = Trial(number, STATES.get(op.get("state", 0), "RUNNING"))
                started[number] = op.get("datetime_start")
            elif code in (SET_TRIAL_STATE, SET_TRIAL_USER_ATTR) and op.get("trial_id") in trials:
                _apply(trials[op["trial_id"]], op, started.get(op["trial_id"]))
    return [trials[n] for n in sorted(trials)]


def _apply(trial: Trial, op: dict, started: str | None) -> None:
    from datetime import datetime

    if op["op_code"] == SET_TRIAL_STATE:
        trial.state = STATES.get(op.get("state"), trial.state)
        if op.get("datetime_start"):
            started = op["datetime_start"]
        if trial.duration_s is None and started and op.get("datetime_complete"):
            span = datetime.fromisoformat(op["datetime_complete"]) - datetime.fromisoformat(started)
            trial.duration_s = span.total_seconds()
        return
    attrs = op.get("user_attr") or {}
    if "val_dice" in attrs:
        trial.val_dice = attrs["val_dice"]
    if "duration_s" in attrs:  # the trial's own timing (training + test), adopted trials included
        trial.duration_s = attrs["duration_s"]


def read_trials_csv(path: Path) -> list[Trial]:
    """The trials of a finished cell's ``trials.csv`` (a cell without a journal: zero-shot, an RDB storage)."""
    def number(value: str) -> float | None:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    with open(path, encoding="utf-8", newline="") as fh:
        return [Trial(int(row["trial"]), row["state"], number(row.get("val_dice")), number(row.get("duration_s")))
                for row in csv.DictReader(fh)]


def lock_held(path: Path) -> bool:
    """Whether some process holds an OS lock on ``path``, read from ``/proc/locks`` (no lock is taken)."""
    try:
        st = os.stat(path)
        table = Path("/proc/locks").read_text()
    except OSError:
        return False
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(key in line.split() for line in table.splitlines())


def cell_status(files: CellFiles, cell: tuple[str, str, str], planned: int, seeds: int = 1) -> CellStatus:
    """One cell's progress from its folder (empty when the folder does not exist)."""
    done = sum(Path(files.seed(r).result_json).is_file() for r in range(seeds))
    status = CellStatus(cell, planned, finished_cell=Path(files.best_json).is_file(), seeds_planned=seeds,
                        seeds_done=done)
    if Path(files.journal).is_file():
        status.trials = read_journal(Path(files.journal))
    elif Path(files.trials_csv).is_file():
        status.trials = read_trials_csv(Path(files.trials_csv))
    status.running = sum(t.state == "RUNNING" and lock_held(files.trial(t.number).owner_lock)
                         for t in status.trials)
    return status


def grid_status(grid: Grid, results: str | Path, n_trials: int, final_seeds: int = 1) -> list[CellStatus]:
    """Every cell's progress; an untuned method (zero-shot) plans one evaluation and one replicate."""
    from .cells import Layout
    from .methods import METHODS

    layout = Layout(str(results))
    return [cell_status(layout.cell(*c), c, *((n_trials, final_seeds) if METHODS[c[1]].tuned else (1, 1)))
            for c in grid.cells()]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_lines(cells: list[CellStatus]) -> list[str]:
    """A table (one line per cell) and a one-line summary; a cell without a finished trial gets the grid's
    mean trial duration for its ETA (marked ~)."""
    every = [d for c in cells for d in c.durations]
    fallback = statistics.fmean(every) if every else None
    header = ("cell", "trials", "seeds", "best val Dice", "state", "ETA")
    rows = []
    for c in cells:
        state = ("done" if c.finished_cell else f"running ({c.running})" if c.running
                 else "interrupted" if any(t.state == "RUNNING" for t in c.trials)
                 else "waiting" if not c.trials else "stopped")
        eta = c.eta_s(fallback)
        guess = "~" if c.remaining and not c.durations and eta is not None else ""
        best = c.best_val_dice
        rows.append((ROW_SEP.join(c.cell), f"{c.done}/{c.planned}", f"{c.seeds_done}/{c.seeds_planned}",
                     "—" if best is None else f"{best:.3f}", state,
                     "—" if c.finished_cell else guess + _duration(eta)))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows)]
    etas = [c.eta_s(fallback) for c in cells]
    left = "unknown (no trial finished yet)" if None in etas else _duration(sum(etas))
    lines.append(f"{sum(c.finished_cell for c in cells)}/{len(cells)} cells done, "
                 f"{sum(min(c.done, c.planned) for c in cells)}/{sum(c.planned for c in cells)} trials, "
                 f"{sum(c.seeds_done for c in cells)}/{sum(c.seeds_planned for c in cells)} seed replicates, "
                 f"{sum(c.running for c in cells)} running; about {left} of trial time left "
                 "(not counting the seed replicates' retraining)")
    return lines
