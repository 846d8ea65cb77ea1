"""The code's pointers into docs/ lead somewhere: every ``docs/FILE.md`` a module names exists, and every
``docs/FILE.md §N`` is a numbered heading of that file (docs/conventions.md: section numbers are stable)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("wire", "host", "guest", "attest", "tdxsim")
CITATION = re.compile(r"docs/([\w-]+\.md)((?:[ ,;]*§\s*\d+(?:\.\d+)?)+)?")
HEADING = re.compile(r"^#+ (\d+(?:\.\d+)?)\.? ", re.M)


def _sections() -> dict[str, set[str]]:
    return {doc.name: set(HEADING.findall(doc.read_text())) for doc in (ROOT / "docs").glob("*.md")}


def _modules() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT).parts[:2] != ("wire", "v1")
    ]


def test_every_cited_docs_page_and_section_exists() -> None:
    sections = _sections()
    missing = []
    cited = 0
    for path in _modules():
        for match in CITATION.finditer(path.read_text()):
            page, numbers = match.group(1), re.findall(r"§\s*(\d+(?:\.\d+)?)", match.group(2) or "")
            cited += 1
            where = f"{path.relative_to(ROOT)}: docs/{page}"
            if page not in sections:
                missing.append(where)
            else:
                missing += [f"{where} §{number}" for number in numbers if number not in sections[page]]
    assert cited > len(_modules())  # the pattern finds the citations at all
    assert missing == []


def test_every_module_docstring_cites_the_docs() -> None:
    """Each module says what real thing it models and where docs/ describes it (small package faces too)."""
    uncited = []
    for path in _modules():
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if not CITATION.search(docstring):
            uncited.append(str(path.relative_to(ROOT)))
    assert uncited == []
