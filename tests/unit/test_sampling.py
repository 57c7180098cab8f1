"""The startup trials spread over the search space (scrambled Sobol), the same points in every cell,
and a resumed trial draws the same values (tunevlseg.sampling)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from tunevlseg.sampling import DIMENSIONS, SobolStartup, sobol_point, to_value
from tunevlseg.tune import suggest

LR = {"type": "float", "low": 0.005, "high": 0.05, "log": True}  # the demo's range
SPACE = {"lr": LR, "depth": {"type": "int", "low": 1, "high": 4}, "weight_decay": {"type": "float", "low": 1e-5,
                                                                                    "high": 1e-2, "log": True}}


def startup_params(space: dict, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=SobolStartup(seed, n, optuna.samplers.RandomSampler(seed=seed)))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(suggest(trial, space))
        study.tell(trial, 0.0)
    return out


def log_quantile(value: float) -> float:
    return (math.log(value) - math.log(LR["low"])) / (math.log(LR["high"]) - math.log(LR["low"]))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [2, 4, 8])
def test_the_startup_trials_of_a_cell_cover_the_lr_range(seed, n):
    """n = 2^m startup trials put one lr in each of n equal parts of the log range, whatever the seed (before:
    two trials of the demo drew lr 0.02595 and 0.02626, side by side)."""
    params = startup_params(SPACE, n, seed)
    parts = sorted(int(log_quantile(p["lr"]) * n) for p in params)
    assert parts == list(range(n))
    assert all(LR["low"] <= p["lr"] <= LR["high"] for p in params)
    depths = [p["depth"] for p in params]
    assert sorted(depths) == sorted({1, 2, 3, 4} if n == 4 else depths) and len(set(depths)) == min(n, 4)


def test_cells_share_the_points_of_the_names_they_share():
    """Common random numbers: trial k of a coop cell and of a cocoop cell try the same lr and depth."""
    coop = startup_params(SPACE, 4)
    cocoop = startup_params({**SPACE, "hidden": {"type": "categorical", "choices": [32, 64, 128]}}, 4)
    for a, b in zip(coop, cocoop, strict=True):
        assert a["lr"] == b["lr"] and a["depth"] == b["depth"]
    assert startup_params(SPACE, 4, seed=1)[0]["lr"] != coop[0]["lr"]


def test_a_point_depends_only_on_seed_trial_and_name():
    values = [sobol_point(0, k, "lr") for k in range(8)]
    assert [sobol_point(0, k, "lr") for k in reversed(range(8))] == values[::-1]  # no state between calls
    assert len(set(values)) == 8 and all(0 <= v < 1 for v in values)
    with pytest.raises(KeyError, match="no Sobol dimension for hyper-parameter 'lrr'"):
        sobol_point(0, 0, "lrr")


def test_every_catalogue_hyper_parameter_has_a_dimension():
    from tunevlseg.methods import METHODS

    for method in METHODS.values():
        assert set(method.accepted_search_keys()) <= set(DIMENSIONS)


def test_values_map_onto_their_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    assert to_value(0.0, FloatDistribution(1e-4, 1e-2, log=True)) == pytest.approx(1e-4)
    assert to_value(0.5, FloatDistribution(1e-4, 1e-2, log=True)) == pytest.approx(1e-3)
    assert [to_value(u, IntDistribution(1, 4)) for u in (0.0, 0.26, 0.5, 0.99)] == [1, 2, 3, 4]
    assert [to_value(u, CategoricalDistribution(["a", "b", "c"])) for u in (0.1, 0.4, 0.9)] == ["a", "b", "c"]
    assert to_value(0.49, FloatDistribution(0.0, 1.0, step=0.25)) == 0.5
    grid = np.linspace(0, 0.999, 50)
    assert all(1 <= to_value(u, IntDistribution(1, 11)) <= 11 for u in grid)


def test_after_the_startup_trials_the_next_sampler_decides():
    study = optuna.create_study(sampler=SobolStartup(0, 2, optuna.samplers.RandomSampler(seed=3)))
    values = []
    for _ in range(3):
        trial = study.ask()
        values.append(suggest(trial, {"lr": LR})["lr"])
        study.tell(trial, 0.0)
    reference = optuna.samplers.RandomSampler(seed=3)
    assert values[:2] == [to_value(sobol_point(0, k, "lr"), optuna.distributions.FloatDistribution(0.005, 0.05,
                                                                                                    log=True))
                          for k in range(2)]
    assert values[2] != values[0] and reference is not None
