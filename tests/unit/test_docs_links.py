"""The README stays a short hub, and every relative link of README.md, CHANGELOG.md and docs/ resolves.

A link's file must exist; a ``#anchor`` into a markdown file must name one of its headings, slugged as
GitHub does (lower case, punctuation other than ``-`` and ``_`` dropped, spaces to ``-``, ``-1``, ``-2``
for repeats).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = [README, REPO / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def _prose_lines(text: str):
    """Lines outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (links reduced to their text, code spans to their content)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    found = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        found += _LINK.findall(_CODE_SPAN.sub("``", line))
    return found


def test_slug_follows_githubs_rule():
    assert slug("The paper's grid on SLURM, several GPUs, parallel trials, preemption") == \
        "the-papers-grid-on-slurm-several-gpus-parallel-trials-preemption"
    assert slug("Pretraining: `shapes`") == "pretraining-shapes"
    assert slug("Where we deliberately differ") == "where-we-deliberately-differ"
    assert slug("snake_case and -dash-") == "snake_case-and--dash-"


def test_readme_is_a_short_hub():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/ (at most 200)"


def test_readme_links_every_docs_page():
    linked = {(README.parent / unquote(t.split("#")[0])).resolve() for t in links(README)
              if not _EXTERNAL.match(t) and not t.startswith("#")}
    missing = [str(p.relative_to(REPO)) for p in DOCS.rglob("*.md") if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"
    for name in ("LICENSE", "CITATION.cff", "CHANGELOG.md"):
        assert (REPO / name).resolve() in linked, name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            broken.append(f"{target} (no heading '#{anchor}' in {dest.relative_to(REPO)})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_page_mentions_the_design_notes(page):
    assert "DESIGN.md" not in page.read_text(encoding="utf-8")


def test_no_source_cites_a_document_the_repository_does_not_have():
    root = Path(__file__).resolve().parents[2]
    cited = [str(p.relative_to(root)) for folder in ("src", "rules", "workflow") for p in (root / folder).rglob("*")
             if p.is_file() and p.suffix in {".py", ".smk", ".yaml", ".rst", ""}
             and "DESIGN.md" in p.read_text(encoding="utf-8", errors="ignore")]
    assert not cited, f"cite docs/ instead of DESIGN.md (not in the repository): {cited}"
