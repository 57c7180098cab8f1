"""Stopping hopeless trials early: Optuna's pruners, fed the objective's value after every epoch.

``tuning.pruner``: ``none`` (the paper's protocol: every trial trains to its end), ``median``
(:class:`optuna.pruners.MedianPruner`: stop a trial whose best-so-far value at epoch e is worse than
the median of earlier trials at e) or ``hyperband`` (:class:`optuna.pruners.HyperbandPruner`,
resource = epochs). ``pruner_startup_trials`` trials are never pruned (median) and no trial is
pruned before ``pruner_warmup_epochs`` epochs.

What is reported at epoch e is the objective's running value: the best validation Dice so far
(``best_val_dice``, the value the trial would return if it stopped there) or that epoch's
validation loss (``last_val_loss``). A pruned trial is recorded PRUNED and counts towards
``n_trials`` (a study stops after ``n_trials`` COMPLETE + PRUNED trials): pruning exists to spend
fewer epochs, and replacing each pruned trial by a new one would spend more.
"""

from __future__ import annotations

import optuna

PRUNERS = ("none", "median", "hyperband")


def make_pruner(name: str, epochs: int, startup_trials: int = 5, warmup_epochs: int = 2) -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name`` for trials of at most ``epochs`` epochs."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup_epochs), max_resource=max(1, epochs),
                                              reduction_factor=3)
    raise ValueError(f"tuning.pruner must be one of {PRUNERS}, got {name!r}")


def objective_value(history: list[dict], objective: str) -> float:
    """The objective's value after the last epoch of ``history``."""
    if objective == "last_val_loss":
        return float(history[-1]["val_loss"])
    return max(float(row["val_dice"]) for row in history)


class EpochReporter:
    """``on_epoch`` hook of :func:`tunevlseg.train.loop.train_prompts`: reports each new epoch's objective
    value to the trial (epochs already in the study — a resumed trial — are not reported twice) and
    returns True when the study's pruner says stop."""

    def __init__(self, trial: optuna.Trial, objective: str):
        self.trial, self.objective = trial, objective
        self.pruned_at: int | None = None

    def __call__(self, history: list[dict]) -> bool:
        reported = self.trial._cached_frozen_trial.intermediate_values  # noqa: SLF001 (no public read)
        for k in range(len(history)):
            epoch = int(history[k]["epoch"])
            if epoch not in reported:
                self.trial.report(objective_value(history[: k + 1], self.objective), epoch)
        if self.trial.should_prune():
            self.pruned_at = int(history[-1]["epoch"])
            return True
        return False


__all__ = ["EpochReporter", "PRUNERS", "make_pruner", "objective_value"]
