"""The generated reference pages (docs/reference/) are current, and the generator covers every entry."""

from __future__ import annotations

import yaml

from tunevlseg import docgen


def test_committed_reference_pages_are_current():
    stale = [name for name, text in docgen.render_pages().items()
             if not (docgen.OUT / name).is_file() or (docgen.OUT / name).read_text() != text]
    assert not stale, f"docs/reference/{stale} out of date: run `make docs`"


def test_check_mode_names_a_stale_page_and_writes_nothing(tmp_path, capsys):
    assert docgen.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(docgen.PAGES)
    (tmp_path / "cli.md").write_text("old\n")
    assert docgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert "cli.md" in capsys.readouterr().err and (tmp_path / "cli.md").read_text() == "old\n"


def test_config_page_lists_every_schema_key():
    schema = yaml.safe_load(docgen.SCHEMA.read_text())
    page = docgen.render_pages()["config.md"]
    for key in schema["properties"]:
        assert f"| `{key}` |" in page
    for key in schema["properties"]["tuning"]["properties"]:
        assert f"| `tuning.{key}` |" in page
    for name in schema["$defs"]:
        assert f"\n## {name}\n" in page


def test_cli_and_registry_pages_cover_every_command_and_entry():
    from tunevlseg.cli import build_parser
    from tunevlseg.data.registry import REGISTRY as DATASETS
    from tunevlseg.methods import METHODS
    from tunevlseg.models.registry import REGISTRY as MODELS

    pages = docgen.render_pages()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in sub.choices:
        assert f"## `tunevlseg {command}`" in pages["cli.md"]
    for name in [*METHODS, *MODELS, *DATASETS]:
        assert f"| `{name}` |" in pages["registries.md"]
