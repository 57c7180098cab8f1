"""Config precedence (docs/how-to/configure.md, "Precedence"): how the schema's defaults, the method catalogue, a config's
``training`` and its ``methods.<m>`` combine into what every cell of a method gets
(``tunevlseg.config.effective_settings``, read by the rules' cell settings, ``estimate`` and ``check-config``)."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from tunevlseg import cli
from tunevlseg import config as cfg
from tunevlseg.methods import METHODS
from tunevlseg.models.registry import supports

REPO = Path(__file__).parents[2]
PAPER = "workflow/presets/paper.yaml"
FAST = "workflow/presets/fast.yaml"
#: Every (model, method) cell's settings (dataset left out) of the shipped configs with every catalogue method
#: in the grid, written by the code before methods.<m> was merged key by key (commit 2052c8e).
GOLDEN = Path(__file__).parent / "golden" / "effective_settings.json"


def load(*paths: str, overlay: dict | None = None) -> dict:
    """Config files merged as Snakemake merges ``--configfile A B`` (and ``--config``), validated as the
    Snakefile validates them."""
    config: dict = {}
    for path in paths:
        update_config(config, yaml.safe_load((REPO / path).read_text()))
    update_config(config, copy.deepcopy(overlay or {}))
    cfg.validate_workflow_config(config)
    return config


def cells(config: dict) -> dict:
    """``model/method`` → the cell settings of the grid's first dataset, every catalogue method in the grid."""
    config = copy.deepcopy(config)
    config["benchmark"]["methods"] = list(METHODS)
    dataset = config["benchmark"]["datasets"][0]
    out = {}
    for model in config["benchmark"]["models"]:
        for method in METHODS:
            if supports(model, method):
                settings = cfg.cell_settings(config, model, method, dataset)
                assert settings.pop("dataset") == dataset
                out[f"{model}/{method}"] = settings
    return out


def sources(config: dict, method: str, part: str) -> dict:
    return {k: src for k, (_, src) in cfg.effective_settings(config, method, sources=True)[part].items()}


@pytest.mark.parametrize("paths", [("config.yaml",), (PAPER,), (PAPER, FAST)])
def test_effective_settings_of_the_shipped_configs_are_unchanged(paths):
    golden = json.loads(GOLDEN.read_text())[" + ".join(paths)]
    now = cells(load(*paths))
    assert sorted(now) == sorted(golden) and len(now) == 12  # 8 methods on CLIPSeg, 4 on CRIS
    for cell, settings in golden.items():
        assert now[cell] == settings, cell


def test_training_epochs_reaches_finetune_when_the_user_sets_it():
    paper = load(PAPER)
    assert cfg.training_settings(paper, "coop")["epochs"] == 20  # the schema's default
    assert cfg.training_settings(paper, "finetune")["epochs"] == 40  # the catalogue's, above the default
    assert sources(paper, "finetune", "training")["epochs"] == cfg.CATALOGUE
    quick = load(PAPER, overlay={"training": {"epochs": 2}})
    for method in ("coop", "finetune", "maple"):
        assert cfg.training_settings(quick, method)["epochs"] == 2, method
        assert sources(quick, method, "training")["epochs"] == "training.epochs"
    s = cells(quick)["clipseg/finetune"]
    assert s["training"]["epochs"] == 2 and s["search"] == METHODS["finetune"].search


def test_a_methods_own_training_beats_the_global_and_null_drops_the_catalogues():
    demo = load("config.yaml", overlay={"methods": {"coop": {"training": {"epochs": 3, "plateau_patience": 1}}}})
    assert demo["training"]["epochs"] == 8
    assert cfg.training_settings(demo, "finetune")["epochs"] == 40
    assert sources(demo, "finetune", "training")["epochs"] == "methods.finetune.training.epochs"
    coop, cocoop = cfg.training_settings(demo, "coop"), cfg.training_settings(demo, "cocoop")
    assert (coop["epochs"], coop["plateau_patience"], coop["batch_size"]) == (3, 1, 32)
    assert (cocoop["epochs"], cocoop["plateau_patience"]) == (8, 3)
    src = sources(demo, "coop", "training")
    assert src["epochs"] == "methods.coop.training.epochs" and src["early_stopping_patience"] == \
        "training.early_stopping_patience" and src["lambda_ce"] == cfg.SCHEMA_DEFAULT
    no_catalogue = load(PAPER, overlay={"methods": {"finetune": {"training": {"epochs": None}}}})
    assert cfg.training_settings(no_catalogue, "finetune")["epochs"] == 20
    assert sources(no_catalogue, "finetune", "training")["epochs"] == cfg.SCHEMA_DEFAULT


def test_a_partial_search_keeps_the_catalogues_other_keys():
    lr = {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}
    config = load(PAPER, overlay={"methods": {"maple": {"search": {"lr": lr}},
                                              "finetune": {"training": {"epochs": 2}}}})
    maple = cfg.effective_settings(config, "maple")
    assert maple["search"] == {**METHODS["maple"].search, "lr": lr}
    assert len(maple["search"]) == 4 and maple["search"]["coupling"]["choices"][0] == "mlp32"
    assert maple["fixed"] == METHODS["maple"].fixed and len(maple["fixed"]) == 5
    assert sources(config, "maple", "search") == {"lr": "methods.maple.search.lr", "weight_decay": cfg.CATALOGUE,
                                                   "depth": cfg.CATALOGUE, "coupling": cfg.CATALOGUE}
    finetune = cfg.effective_settings(config, "finetune")  # the quick run: no search space copied
    assert finetune["search"] == METHODS["finetune"].search and finetune["training"]["epochs"] == 2
    cfg.check_config(config, "quick.yaml")


def test_null_removes_a_key_and_a_name_given_in_one_part_leaves_the_other():
    config = load(PAPER, overlay={"methods": {
        "cocoop": {"search": {"projection": None, "normalize_feature": {"type": "categorical",
                                                                         "choices": [True, False]}},
                   "fixed": {"hidden": 128}},
        "vpt": {"fixed": None},
        "shared_separate": {"fixed": {"depth_init": None}}}})
    cocoop = cfg.effective_settings(config, "cocoop")
    assert sorted(cocoop["search"]) == ["depth", "lr", "normalize_feature", "weight_decay"]
    assert cocoop["fixed"] == {"first_layer_init": "kaiming", "hidden": 128}
    assert cfg.effective_settings(config, "vpt")["fixed"] == {}
    assert cfg.effective_settings(config, "vpt")["search"] == METHODS["vpt"].search
    assert cfg.effective_settings(config, "shared_separate")["fixed"] == {"prompts_in_decoder": True,
                                                                          "decoder_sees_next_prompt": True}
    cfg.check_config(config, "mine.yaml")
    config["methods"]["coop"] = {"search": {"depth": None}}
    with pytest.raises(cfg.ConfigError, match=r"mine.yaml: methods.coop.search: needs \['depth'\]"):
        cfg.check_config(config, "mine.yaml")
    config["methods"]["coop"] = {"search": {"weight_decy": None}}  # a removed name is checked too
    with pytest.raises(cfg.ConfigError, match=r"methods.coop.search: unknown hyper-parameter\(s\) \['weight_decy'\]"):
        cfg.check_config(config, "mine.yaml")


def test_the_catalogue_is_not_changed_by_a_config():
    config = load(PAPER, overlay={"methods": {"cocoop": {"search": {"hidden": {"type": "categorical",
                                                                               "choices": [8]}}}}})
    cfg.effective_settings(config, "cocoop")["search"]["lr"]["low"] = 0.5
    assert METHODS["cocoop"].search["lr"]["low"] == 1e-5 and METHODS["cocoop"].search["hidden"]["choices"] == [
        32, 64, 128]


def test_the_schemas_training_defaults_are_the_trainers():
    from tunevlseg.train.loop import TrainSettings

    defaults = cfg.training_defaults()
    assert len(defaults) == 14 and defaults["epochs"] == 20 and defaults["cache_frozen"] == "auto"
    trainer = TrainSettings()
    assert {k: getattr(trainer, k) for k in defaults} == defaults


def _table(out: str) -> dict:
    """check-config --show-effective output → method → key → (value text, source)."""
    table: dict = {}
    method = None
    for line in out.splitlines():
        if line.startswith("    "):
            key, value, source = re.split(r"\s{2,}", line.strip())
            table[method][key] = (value, source)
        elif line.startswith("  "):
            method = line.strip()
            table[method] = {}
    return table


def test_check_config_shows_the_effective_settings_and_their_sources(tmp_path, capsys):
    mine = yaml.safe_load((REPO / PAPER).read_text())
    mine["benchmark"]["methods"] = ["finetune", "maple"]
    mine["training"]["epochs"] = 5
    mine["methods"] = {"maple": {"search": {"depth": {"type": "int", "low": 1, "high": 3}}},
                       "finetune": {"training": {"plateau_patience": 2}}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(mine, sort_keys=False))
    assert cli.main(["check-config", str(path), "--show-effective"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok\n{path}: effective method settings")
    table = _table(out)
    assert list(table) == ["finetune", "maple"]
    finetune, maple = table["finetune"], table["maple"]
    assert finetune["training.epochs"] == ("5", "training.epochs")  # beats the catalogue's 40
    assert finetune["training.plateau_patience"] == ("2", "methods.finetune.training.plateau_patience")
    assert finetune["training.augment"] == ("true", "schema default")
    assert finetune["search.lr"] == ("{type: float, low: 1.0e-05, high: 0.005, log: true}", "catalogue")
    assert maple["search.depth"] == ("{type: int, low: 1, high: 3}", "methods.maple.search.depth")
    assert maple["search.coupling"][1] == "catalogue" and maple["fixed.coupling_layout"] == ("reference", "catalogue")
    assert (len(finetune), len(maple)) == (2 + 14, 4 + 5 + 14)
    assert cli.main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok\n"  # the table only when asked


if __name__ == "__main__":  # rewrite the golden file: only for an intended change of the shipped configs
    GOLDEN.write_text(json.dumps({" + ".join(p): cells(load(*p)) for p in (("config.yaml",), (PAPER,), (PAPER, FAST))},
                                 indent=1, sort_keys=True) + "\n")
    sys.exit(0)
