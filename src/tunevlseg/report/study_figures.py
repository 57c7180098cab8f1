"""Per-cell Optuna figures: optimisation history and hyper-parameter importances.

The study is read from a *copy* of the cell's journal (``study.journal``), so a report made while
the cell still runs never touches the live file; a half-written last line is ignored by Optuna's
reader.  Plots come from :mod:`optuna.visualization.matplotlib`; its global style change
(``ggplot``) is confined to the call with :func:`matplotlib.pyplot.rc_context`.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import optuna
from matplotlib import pyplot as plt
from matplotlib.ticker import MaxNLocator
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tunevlseg.report.figures import placeholder, save_figure
from tunevlseg.report.stats import MIN_IMPORTANCE_TRIALS, too_small

__all__ = ["history_axes", "importance_axes", "load_study_snapshot", "objective_name",
           "plot_history", "plot_importances"]


def load_study_snapshot(journal: Path) -> optuna.Study | None:
    """The study stored in an Optuna journal file, read from a temporary copy; ``None`` if absent.

    Raises ``ValueError`` naming the file when it is unreadable or holds no (or several) studies.
    """
    journal = Path(journal)
    if not journal.is_file():
        return None
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per cell
    try:
        return _snapshot(journal)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _snapshot(journal: Path) -> optuna.Study:
    with tempfile.TemporaryDirectory(prefix="tunevlseg-journal-") as tmp:
        copy = Path(tmp) / journal.name
        shutil.copyfile(journal, copy)
        try:
            storage = JournalStorage(JournalFileBackend(str(copy)))
            summaries = storage.get_all_studies()
            if len(summaries) != 1:
                raise ValueError(f"holds {len(summaries)} studies, expected 1")
            study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
            # a detached in-memory copy: the temporary journal disappears with this block
            snapshot = optuna.create_study(study_name=study.study_name, direction=study.direction)
            snapshot.add_trials(study.get_trials(deepcopy=False))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(f"{journal}: cannot read the Optuna journal ({exc})") from exc
    return snapshot


def objective_name(study: optuna.Study) -> str:
    """Axis label of the study's objective (the tuner maximises best validation Dice by default)."""
    return "validation Dice" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "last validation loss"


def _n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _save_axes(ax, out_png: Path, dpi: int, title: str) -> Path:
    fig = ax.figure
    try:
        for loc in ("left", "center", "right"):  # Optuna's generic titles give way to the cell's
            ax.set_title("", loc=loc)
        ax.set_title(title, loc="left", fontsize=10)
        return save_figure(fig, out_png, dpi)
    finally:
        plt.close(fig)


def history_axes(study: optuna.Study):
    """Optuna's optimisation-history Axes (one point per COMPLETE trial); ``None`` if none completed.

    The Axes lives on a pyplot figure: close it (``plt.close(ax.figure)``) when done.
    """
    if _n_complete(study) == 0:
        return None
    with plt.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.visualization.matplotlib.plot_optimization_history(study, target_name=objective_name(study))


def importance_axes(study: optuna.Study):
    """``(Axes, None)`` of Optuna's parameter importances, or ``(None, reason)`` when unavailable.

    Importances need :data:`MIN_IMPORTANCE_TRIALS` COMPLETE trials and a parameter that varies among them; when
    Optuna's evaluator cannot tell the trials apart (it warns that importances will be equal) no
    chart is made either.  The Axes lives on a pyplot figure: close it when done.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return None, too_small(len(complete), MIN_IMPORTANCE_TRIALS, "completed trials")
    names = {name for t in complete for name in t.params}
    if not any(len({repr(t.params.get(name)) for t in complete}) > 1 for name in names):
        return None, "no parameter varies"
    before = set(plt.get_fignums())
    with plt.rc_context(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("always", UserWarning)
        try:
            ax = optuna.visualization.matplotlib.plot_param_importances(study, target_name=objective_name(study))
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
            return None, f"importances unavailable: {exc}"[:100]
    if any("importances will be equal" in str(w.message) for w in caught):
        plt.close(ax.figure)  # Optuna could not tell the trials apart: equal bars would mislead
        return None, "trials too alike to rank parameters"
    return ax, None


def plot_history(study: optuna.Study | None, out_png: Path, title: str, dpi: int = 150) -> Path:
    """Save :func:`history_axes` (or a PNG saying why there is nothing) atomically; return ``out_png``."""
    if study is None:
        return placeholder(out_png, dpi, title, "no Optuna study")
    ax = history_axes(study)
    if ax is None:
        return placeholder(out_png, dpi, title, "no completed trials")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save_axes(ax, out_png, dpi, f"{title}: optimisation history")


def plot_importances(study: optuna.Study | None, out_png: Path, title: str, dpi: int = 150) -> Path:
    """Save :func:`importance_axes` (or a PNG saying why there is nothing) atomically; return ``out_png``."""
    if study is None:
        return placeholder(out_png, dpi, title, "no Optuna study")
    ax, reason = importance_axes(study)
    if ax is None:
        return placeholder(out_png, dpi, title, reason)
    return _save_axes(ax, out_png, dpi, f"{title}: parameter importances")
