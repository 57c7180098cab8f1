"""The paper's search spaces are complete, valid under the config schema, and used when the config has none."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import optuna
import yaml

from tunevlseg.prompts import METHODS
from tunevlseg.search_spaces import PAPER_SEARCH_SPACES, method_settings
from tunevlseg.tune import suggest

SCHEMA = yaml.safe_load((Path(__file__).parents[2] / "workflow/schemas/config.schema.yaml").read_text())


def test_every_method_has_a_paper_space_valid_under_the_schema():
    assert set(PAPER_SEARCH_SPACES) == set(METHODS)
    method_schema = {"$defs": SCHEMA["$defs"], **SCHEMA["$defs"]["method"]}
    for name, settings in PAPER_SEARCH_SPACES.items():
        jsonschema.validate(settings, method_schema)
        space = settings.get("search", {})
        if name not in ("zeroshot", "finetune"):
            assert space["depth"] == {"type": "int", "low": 1, "high": 11}
            assert (space["lr"]["low"], space["lr"]["high"]) == (1e-5, 5e-3)


def test_configured_settings_win_and_missing_ones_fall_back():
    mine = {"search": {"lr": {"type": "float", "low": 0.01, "high": 0.02}}}
    assert method_settings("coop", mine) is mine
    fallback = method_settings("cocoop", None)
    fallback["search"]["hidden"]["choices"].append(256)  # a copy: the table itself is untouched
    assert PAPER_SEARCH_SPACES["cocoop"]["search"]["hidden"]["choices"] == [32, 64, 128]


def test_paper_space_samples_the_documented_choices():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = suggest(trial, PAPER_SEARCH_SPACES["shared_attention"]["search"])
    assert params["heads"] in (16, 20, 32) and params["ffn"] in (1280, 1420)
    assert 0.1 <= params["dropout"] <= 0.55 and 1 <= params["depth"] <= 11
