"""The first trials of every study spread over the search space: a scrambled Sobol start.

A study's startup trials (``tuning.n_startup_trials``, before TPE has a model) used to be random draws
seeded by the trial number, so every cell drew the same few values, and two of them could land side by
side (the demo's two trials both sampled lr ≈ 0.026 in every cell). :class:`SobolStartup` gives trial k
point k of a scrambled Sobol sequence instead (:class:`scipy.stats.qmc.Sobol`, Owen-scrambled, seeded by
the study seed): the first 2^m points of a Sobol sequence put exactly one point in each of 2^m equal
intervals of every parameter's range (its log range for ``log`` parameters), so 2 trials take one value
in each half of the lr range, 4 one in each quarter, whatever the seed.

Design decision: **common random numbers across cells.** Each hyper-parameter *name* has one fixed
Sobol dimension (:data:`DIMENSIONS`: every name the method catalogue knows), and the sequence is
seeded by the study seed only, so trial k of every cell of a grid tries the same lr (and depth, where the
method has one). Methods are then compared at the same points of the space, a paired design that
removes the luck of the draw from the comparison of their first trials; TPE takes over after the
startup trials, from each cell's own results.

Points depend only on (seed, trial number, name): a trial killed between its parameter writes resumes
with the same values, and parallel workers draw distinct points.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from scipy.stats import qmc

from .methods import DEPTH_KEY, METHODS, OPTIMISER_KEYS

__all__ = ["DIMENSIONS", "SobolStartup", "sobol_point", "to_value"]

#: One Sobol dimension per hyper-parameter name, the same in every cell (common random numbers).
DIMENSIONS: tuple[str, ...] = (*OPTIMISER_KEYS, DEPTH_KEY,
                               *sorted({h for m in METHODS.values() for h in m.hparams} - {*OPTIMISER_KEYS, DEPTH_KEY}))


@lru_cache(maxsize=64)
def _points(seed: int, m: int) -> np.ndarray:
    return qmc.Sobol(d=len(DIMENSIONS), scramble=True, seed=seed).random_base2(m)


def sobol_point(seed: int, k: int, name: str) -> float:
    """Coordinate ``name`` of point ``k`` (0-based) of the scrambled Sobol sequence seeded ``seed``, in [0, 1)."""
    if name not in DIMENSIONS:
        raise KeyError(f"no Sobol dimension for hyper-parameter '{name}'; known: {', '.join(DIMENSIONS)}")
    m = max(1, math.ceil(math.log2(k + 1)))
    return float(_points(seed, m)[k, DIMENSIONS.index(name)])


def to_value(u: float, dist: BaseDistribution):
    """The value of ``dist`` at quantile ``u`` in [0, 1): uniform (or log-uniform) over the range."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if isinstance(dist, IntDistribution):
        steps = (dist.high - dist.low) // dist.step + 1
        if dist.log:
            x = math.exp(math.log(dist.low) + u * (math.log(dist.high + 1) - math.log(dist.low)))
            return int(min(max(math.floor(x), dist.low), dist.high))
        return int(dist.low + dist.step * min(int(u * steps), steps - 1))
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return float(math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low))))
        value = dist.low + u * (dist.high - dist.low)
        if dist.step:
            value = dist.low + round((value - dist.low) / dist.step) * dist.step
        return float(min(value, dist.high))
    raise TypeError(f"unsupported distribution {dist!r}")


class SobolStartup(BaseSampler):
    """Trial ``k < n_startup``: point k of the seeded Sobol sequence; later trials: ``after`` (e.g. TPE)."""

    def __init__(self, seed: int, n_startup: int, after: BaseSampler):
        self.seed, self.n_startup, self.after = seed, n_startup, after

    def _startup(self, trial) -> bool:
        return trial.number < self.n_startup

    def infer_relative_search_space(self, study, trial):
        return {} if self._startup(trial) else self.after.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return {} if self._startup(trial) else self.after.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if self._startup(trial) and param_name in DIMENSIONS:
            return to_value(sobol_point(self.seed, trial.number, param_name), param_distribution)
        return self.after.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.after.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.after.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.after.reseed_rng()
