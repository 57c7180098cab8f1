"""The CLI turns bad input into one clear line naming the file, and writes nothing half-done."""

from __future__ import annotations

import json

from tunevlseg.cli import main


def test_tune_with_missing_cache_names_it(tmp_path, tiny_model_dir, capsys):
    settings = {"model": "clipseg", "method": "coop", "dataset": "x", "weights": str(tiny_model_dir)}
    code = main(["tune", "--prepared", str(tmp_path / "nope"), "--out", str(tmp_path / "cell"),
                 "--settings", json.dumps(settings)])
    assert code == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "manifest.csv" in err and "Traceback" not in err
    assert not (tmp_path / "cell" / "best.json").exists()


def test_missing_weights_folder_is_named(tmp_path, capsys):
    from tunevlseg.models.clipseg import load_clipseg
    import pytest

    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_clipseg(str(tmp_path / "no_such_model"))


def test_aggregate_with_malformed_best_json_names_it(tmp_path, capsys):
    bad = tmp_path / "best.json"
    bad.write_text("{not json")
    code = main(["aggregate", "--best", str(bad), "--trials", str(tmp_path / "t.csv"),
                 "--tables", str(tmp_path / "tables" / "dice"), "--figures", str(tmp_path / "fig")])
    assert code == 1
    assert str(bad) in capsys.readouterr().err
    assert not (tmp_path / "tables").exists() or not any((tmp_path / "tables").iterdir())


def test_settings_must_be_a_json_object(tmp_path, capsys):
    code = main(["prepare", "--raw", str(tmp_path), "--out", str(tmp_path / "o"), "--size", "32", "--settings", "[1]"])
    assert code == 1 and "JSON object" in capsys.readouterr().err


def test_every_training_command_takes_threads_and_sets_them():
    import torch

    from tunevlseg.cli import _claim_compute, build_parser

    parser = build_parser()
    for command in ("pretrain", "tune", "retrain", "features"):
        args = parser.parse_args([command, "--prepared", "p", "--out", "o", "--settings", "{}", "--threads", "3"]
                                 + (["--replicate", "1"] if command == "retrain" else []))
        assert args.threads == 3, command
    before = torch.get_num_threads()
    try:
        _claim_compute("cpu", 1)
        assert torch.get_num_threads() == 1
        _claim_compute("cpu", 0)  # 0 keeps torch's setting
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_version_prints_the_package_version(capsys):
    import pytest

    from tunevlseg import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"tunevlseg {__version__}"
    from importlib import metadata

    assert metadata.version("tunevlseg") == __version__


def test_a_bug_shows_its_traceback_and_a_project_error_is_one_line(monkeypatch, capsys, tmp_path):
    """A ValueError raised inside a library (numpy) or a KeyError of a bare key is a bug: its traceback is in the
    job log above the one-line summary; the project's own checks stay one line."""
    import numpy as np

    from tunevlseg import cli

    def library_error(args):
        np.zeros(-1)

    def bare_key(args):
        return {}["depth"]

    def project_error(args):
        cli._settings("[1]")  # the project's own check: "--settings must be a JSON object"

    for func, traceback_expected in ((library_error, True), (bare_key, True), (project_error, False)):
        monkeypatch.setattr(cli, "cmd_show_table", func)
        assert main(["show-table", "x.md"]) == 1
        err = capsys.readouterr().err
        assert ("Traceback (most recent call last)" in err) == traceback_expected, err
        assert err.strip().splitlines()[-1].startswith("tunevlseg show-table: error: ")
        if not traceback_expected:
            assert len(err.strip().splitlines()) == 1


def _options_without_help(parser, name="tunevlseg") -> list[str]:
    import argparse

    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{name} {sub_name}")
        elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
            missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_of_every_subcommand_has_help():
    from tunevlseg.cli import build_parser

    parser = build_parser()
    assert _options_without_help(parser) == []
    subcommands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert {"tune", "status", "check-config", "data"} <= set(subcommands)  # the walk reaches them
