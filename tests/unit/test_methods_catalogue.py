"""The method catalogue is the one place a method's traits live: everything else agrees with it."""

from __future__ import annotations

import inspect
from pathlib import Path

import jsonschema
import optuna
import pytest
import yaml

from tunevlseg.config import cell_settings
from tunevlseg.methods import CATALOGUE, METHODS, catalogue_settings, get_method
from tunevlseg.models.registry import REGISTRY, supports
from tunevlseg.prompts import learner_class
from tunevlseg.report.collect import BASELINES
from tunevlseg.tune import suggest

SCHEMA = yaml.safe_load((Path(__file__).parents[2] / "workflow/schemas/config.schema.yaml").read_text())
#: Learner __init__ arguments that are not hyper-parameters a config can set.
STRUCTURAL = {"self", "dims", "depth", "n_ctx", "init_embeddings", "model"}


@pytest.mark.parametrize("method", METHODS)
def test_learner_is_found_and_declares_the_catalogue_traits(method):
    info = METHODS[method]
    cls = learner_class(method)
    assert cls.method == method
    assert cls.modalities == info.modalities and cls.uses_image_feature == info.uses_image_feature
    assert learner_hparams(cls) == set(info.hparams), "catalogue hparams must be exactly the learner's arguments"


def learner_hparams(cls) -> set[str]:
    """The keyword arguments a learner accepts: its own, and its bases' when it passes ``**kwargs`` on."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__module__.startswith("torch"):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names - STRUCTURAL


@pytest.mark.parametrize("method", METHODS)
def test_paper_space_is_valid_under_the_schema_and_uses_accepted_names(method):
    info = METHODS[method]
    settings = catalogue_settings(method)
    method_schema = {"$defs": SCHEMA["$defs"], **SCHEMA["$defs"]["method"]}
    jsonschema.validate(settings, method_schema)
    space = settings.get("search", {})
    assert set(space) <= set(info.accepted_search_keys())
    if info.tuned:
        assert set(info.required_search_keys()) <= set(space)
    if info.searches_depth:
        assert space["depth"] == {"type": "int", "low": 1, "high": 11}
        assert (space["lr"]["low"], space["lr"]["high"]) == (1e-5, 5e-3)
    else:
        assert "depth" not in space


def test_schema_enums_are_the_catalogue():
    assert SCHEMA["properties"]["benchmark"]["properties"]["methods"]["items"]["enum"] == list(METHODS)
    assert SCHEMA["properties"]["methods"]["propertyNames"]["enum"] == list(METHODS)
    assert SCHEMA["properties"]["benchmark"]["properties"]["models"]["items"]["enum"] == list(REGISTRY)


def test_derived_traits():
    assert BASELINES == {"zeroshot", "finetune"}
    assert [m.name for m in CATALOGUE if not m.tuned] == ["zeroshot"]
    assert [m.name for m in CATALOGUE if m.trains_model] == ["finetune"]
    # CRIS's ResNet has no vision tokens: methods with vision prompts are not in its grid
    assert [m for m in METHODS if supports("cris", m)] == ["zeroshot", "finetune", "coop", "cocoop"]
    assert all(supports("clipseg", m) for m in METHODS)
    with pytest.raises(KeyError, match="unknown method 'coopp'"):
        get_method("coopp")
    with pytest.raises(KeyError, match="unknown model 'sam'"):
        supports("sam", "coop")


def test_catalogue_settings_are_copies_of_the_paper_settings():
    fallback = catalogue_settings("cocoop")
    fallback["search"]["hidden"]["choices"].append(256)  # a copy: the catalogue itself is untouched
    assert METHODS["cocoop"].search["hidden"]["choices"] == [32, 64, 128]
    assert catalogue_settings("finetune")["training"] == {"epochs": 40}
    assert catalogue_settings("zeroshot") == {}


def test_paper_space_samples_the_documented_choices():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = suggest(study.ask(), METHODS["shared_attention"].search)
    assert params["heads"] in (16, 20, 32) and params["ffn"] in (1280, 1420)
    assert 0.1 <= params["dropout"] <= 0.55 and 1 <= params["depth"] <= 11


def test_cell_settings_use_the_paper_space_when_the_config_has_none():
    config = yaml.safe_load((Path(__file__).parents[2] / "config.yaml").read_text())
    config["methods"].pop("vpt")
    settings = cell_settings(config, "clipseg", "vpt", "newlook")
    assert settings["search"] == METHODS["vpt"].search
    assert settings["weights"] == "results/pretrained/clipseg-standin"
    assert "workers_per_cell" not in settings and "storage" not in settings
