"""Config checks beyond the schema, and the config → rule-settings translation (tunevlseg.config)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tunevlseg import config as cfg
from tunevlseg.cells import CellResult, Layout

DEMO = yaml.safe_load((Path(__file__).parents[2] / "config.yaml").read_text())


def _demo():
    return copy.deepcopy(DEMO)


@pytest.mark.parametrize("edit,key,words", [
    (lambda c: c["benchmark"]["datasets"].append("kvasirr"), "benchmark.datasets", ["kvasirr", "newlook"]),
    (lambda c: c["benchmark"]["models"].append("sam"), "benchmark.models", ["sam", "clipseg"]),
    (lambda c: c["methods"]["vpt"]["search"].update(weight_decy=c["methods"]["vpt"]["search"]["weight_decay"]),
     "methods.vpt.search", ["weight_decy", "weight_decay", "depth"]),
    (lambda c: c["methods"]["cocoop"].update(fixed={"hiden": 32}), "methods.cocoop.fixed", ["hiden", "hidden"]),
    (lambda c: c["methods"]["coop"]["search"].update(depth=None), "methods.coop.search", ["depth"]),  # null removes
    (lambda c: c["methods"]["coop"]["search"]["lr"].update(low=0.1, high=0.01), "methods.coop.search.lr",
     ["low 0.1 > high 0.01"]),
    (lambda c: c["models"]["cris"]["standin"].update(dataset="nowhere"), "models.cris.standin.dataset",
     ["nowhere"]),
    (lambda c: c["benchmark"].update(models=["cris"], methods=["vpt"]), "benchmark", ["no model supports"]),
])
def test_errors_name_the_file_and_the_key(edit, key, words):
    config = _demo()
    edit(config)
    with pytest.raises(cfg.ConfigError) as err:
        cfg.check_config(config, "my_study.yaml")
    assert str(err.value).startswith(f"my_study.yaml: {key}: ")
    for word in words:
        assert word in str(err.value)


def test_the_demo_config_passes_and_fixed_values_count_as_given():
    cfg.check_config(_demo())
    config = _demo()
    config["methods"]["coop"]["search"].pop("depth")  # the catalogue's range is dropped: a fixed value is given
    config["methods"]["coop"]["fixed"] = {"depth": 2}
    cfg.check_config(config)


def test_cell_settings_are_the_cells_slice_only():
    config = _demo()
    config["tuning"].update(workers_per_cell=3, storage="postgresql://db/x")
    s = cfg.cell_settings(config, "cris", "coop", "ctvolumes")
    assert s["weights"] == "results/pretrained/cris-standin" and s["model_options"] == {"image_size": 64}
    assert s["search"] == config["methods"]["coop"]["search"] and s["fixed"] == {}
    assert s["training"] == {**cfg.training_defaults(), **config["training"]}
    assert "workers_per_cell" not in s and "storage" not in s and s["n_trials"] == config["tuning"]["n_trials"]
    finetune = cfg.cell_settings(config, "clipseg", "finetune", "newlook")
    assert finetune["training"] == {**s["training"], "epochs": 40}  # the method's own value wins
    assert cfg.worker_markers(config, "clipseg", "coop", "newlook") == [
        f"results/cells/clipseg/coop/newlook/workers/{i}.json" for i in range(3)]
    assert cfg.worker_markers(config, "clipseg", "zeroshot", "newlook") == []  # no study, no workers


def test_report_settings_hold_the_grid_and_domains():
    s = cfg.report_settings(_demo())
    assert s["methods"] == DEMO["benchmark"]["methods"] and s["dpi"] == 150
    assert s["domains"] == {"newlook": "non-radiology", "newword": "natural", "ctvolumes": "radiology"}


def test_layout_paths_pass_wildcards_through():
    cell = Layout("res").cell("{model}", "{method}", "{dataset}")
    assert cell.best_json == "res/cells/{model}/{method}/{dataset}/best.json"
    assert str(Layout("res").cell("a", "b", "c").trial(7).checkpoint) == "res/cells/a/b/c/trials/007/best.pt"
    assert Layout("res").partial().tables() == "res/partial/tables/dice"


def test_cell_result_round_trip_and_errors(tmp_path):
    import json

    path = tmp_path / "best.json"
    result = CellResult("clipseg", "coop", "tissue", trial=2, params={"depth": 1}, val_dice=0.5, test_dice_mean=0.4,
                        test_dice_std=0.1)
    path.write_text(json.dumps(result.to_dict()))
    back = CellResult.read(path)
    assert back.cell == ("clipseg", "coop", "tissue") and back.trial == 2 and back.params == {"depth": 1}
    assert back.test_iou_mean != back.test_iou_mean  # null reads as NaN
    path.write_text(json.dumps({**result.to_dict(), "test_dice_mean": "high"}))
    with pytest.raises(ValueError, match=r"best.json.*'test_dice_mean' must be a number"):
        CellResult.read(path)


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "my_study.yaml"
    path.write_text("results: results\nbenchmark:\n  models: [clipseg\n  methods: [coop]\n")
    with pytest.raises(cfg.ConfigError, match=r"my_study.yaml: line 4, column 10: not valid YAML"):
        cfg.load_config_file(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(cfg.ConfigError, match="my_study.yaml: top level: must be a mapping"):
        cfg.load_config_file(path)


def test_schema_errors_name_the_file_and_the_key_path():
    config = _demo()
    config["tuning"]["n_trials"] = 0
    schema = Path(__file__).parents[2] / "workflow/schemas/config.schema.yaml"
    with pytest.raises(cfg.ConfigError, match=r"my.yaml: tuning.n_trials: 0 is less than the minimum of 1"):
        cfg.validate_schema(config, "my.yaml", schema)
    cfg.validate_schema(_demo(), "config.yaml", schema)


def test_check_config_command_checks_every_file(tmp_path, capsys):
    from tunevlseg.cli import main

    repo = Path(__file__).parents[2]
    assert main(["check-config", "--each", str(repo / "config.yaml"), str(repo / "workflow/presets/paper.yaml")]) == 0
    bad = _demo()
    bad["methods"]["vpt"]["search"]["weight_decy"] = bad["methods"]["vpt"]["search"].pop("weight_decay")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["check-config", str(tmp_path / "bad.yaml")]) == 1
    assert "bad.yaml: methods.vpt.search: unknown hyper-parameter(s) ['weight_decy']" in capsys.readouterr().err


def _undescribed(node: dict, path: str = "") -> list[str]:
    """Keys of a schema node without a description (allOf overlays refine a described $ref: not keys)."""
    missing = []
    for key, sub in (node.get("properties") or {}).items():
        where = f"{path}.{key}" if path else key
        if isinstance(sub, dict):
            if "description" not in sub and "$ref" not in sub:
                missing.append(where)
            missing += _undescribed(sub, where)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        missing += _undescribed(extra, f"{path}.<name>")
    return missing


def test_every_schema_key_has_a_description():
    schema = yaml.safe_load((Path(__file__).parents[2] / "workflow/schemas/config.schema.yaml").read_text())
    missing = _undescribed(schema) + [m for name, d in schema["$defs"].items() for m in _undescribed(d, f"$defs.{name}")]
    assert not missing, missing
# ---- the frozen-feature cache (tunevlseg.features): which cells read it, what the features rule gets
def test_only_tuned_methods_with_a_frozen_image_side_read_the_feature_cache():
    config = _demo()
    readers = {m for m in config["benchmark"]["methods"] if cfg.features_input(config, "clipseg", m, "newlook")}
    assert readers == {"coop", "cocoop"}  # zeroshot: frozen too, but one evaluation; vpt & co: prompted
    assert cfg.features_input(config, "cris", "cocoop", "newlook") == "results/features/cris/newlook/64"
    config["methods"]["cocoop"]["training"] = {"cache_frozen": False}  # YAML 1.1 reads `off` as false
    assert cfg.features_input(config, "clipseg", "cocoop", "newlook") == []
    assert cfg.features_input(config, "clipseg", "coop", "newlook")
    config["training"]["cache_frozen"] = "off"
    assert cfg.features_input(config, "clipseg", "coop", "newlook") == []


def test_features_settings_and_shared_cache_keys():
    config = _demo()
    config["training"].update(cache_views=2, cache_dtype="float32")
    s = cfg.features_settings(config, "cris")
    assert s == {"model": "cris", "weights": "results/pretrained/cris-standin", "model_options": {"image_size": 64},
                 "dtype": "float32", "views": 2, "seed": 0, "batch_size": 32, "device": "auto", "amp": True}
    config["methods"]["coop"]["training"] = {"cache_views": 4}
    with pytest.raises(cfg.ConfigError, match="methods.coop.training: \\['cache_views'\\] belong to the shared"):
        cfg.check_config(config, "my.yaml")


PRESETS = Path(__file__).parents[2] / "workflow/presets"


def test_merge_configs_merges_as_snakemake_merges_configfiles():
    from snakemake.utils import update_config

    paper, fast = (yaml.safe_load((PRESETS / f"{n}.yaml").read_text()) for n in ("paper", "fast"))
    merged = cfg.merge_configs(paper, fast)
    expected = copy.deepcopy(paper)
    update_config(expected, fast)
    assert merged == expected
    assert merged["tuning"]["pruner"] == "median" and merged["tuning"]["n_trials"] == paper["tuning"]["n_trials"] == 20
    assert merged["training"]["cache_views"] == 3 and merged["training"]["batch_size"] == 32
    assert len(merged["datasets"]) == 10 and paper["tuning"]["pruner"] == "none"  # inputs untouched
    over = cfg.merge_configs({"a": {"b": [1, 2], "c": 1}, "d": 5}, {"a": {"b": [3]}, "d": None}, {"d": {"e": 1}})
    assert over == {"a": {"b": [3], "c": 1}, "d": {"e": 1}}  # lists and null replace; a mapping replaces a scalar


def test_check_config_checks_the_merge_of_an_overlay(tmp_path, capsys):
    from tunevlseg.cli import main

    assert main(["check-config", str(PRESETS / "paper.yaml"), str(PRESETS / "fast.yaml")]) == 0
    assert capsys.readouterr().out.strip() == f"{PRESETS / 'paper.yaml'} + {PRESETS / 'fast.yaml'}: ok"
    assert main(["check-config", str(PRESETS / "fast.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"tunevlseg check-config: error: {PRESETS / 'fast.yaml'}: top level: missing datasets, models, "
                   "benchmark; if this is an overlay, give its base first: --configfile base.yaml overlay.yaml")
    overlay = tmp_path / "more_trials.yaml"
    overlay.write_text("tuning:\n  n_trials: 0\n")
    assert main(["check-config", str(PRESETS / "paper.yaml"), str(overlay)]) == 1
    assert "paper.yaml + " in (err := capsys.readouterr().err) and "tuning.n_trials: 0 is less than" in err
