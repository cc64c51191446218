"""Every setting and every problem type is documented: read from the code, looked up in the docs
(README.md and docs/*.md), so a new one cannot ship undocumented."""

from __future__ import annotations

import re

import pytest

from gateway.core.errors import PROBLEM_TYPES
from gateway.settings import Settings
from tests.conftest import ROOT

PREFIX = "CIVI_GATEWAY_"


def _docs() -> str:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def _documented_names(text: str) -> set[str]:
    """Setting names the docs mention: `CIVI_GATEWAY_X` in full, `X` in a table of a page that
    states the prefix once (docs/cv.md), and the docs' shorthand "`CIVI_GATEWAY_HTTP_API_KEY` /
    `_SITE_KEY`", where the suffix replaces the first name's last words."""
    names: set[str] = set()
    for line in text.splitlines():
        tokens = re.findall(r"`([A-Z][A-Z0-9_]*|_[A-Z0-9_]+)(?:=[^`]*)?`", line)
        full = [t.removeprefix(PREFIX) for t in tokens if t.startswith(PREFIX)]
        names.update(full)
        if line.startswith("|"):
            names.update(t for t in tokens if not t.startswith("_") and not t.startswith(PREFIX))
        for first in full[:1]:
            words = first.split("_")
            for suffix in (t[1:] for t in tokens if t.startswith("_")):
                names.update("_".join([*words[:i], suffix]) for i in range(len(words)))
    return names


DOCUMENTED = _documented_names(_docs())


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str):
    assert field.upper() in DOCUMENTED, (
        f"{PREFIX}{field.upper()} is documented nowhere: add it to README.md's settings table "
        "or the docs page of its feature"
    )


@pytest.mark.parametrize("slug", sorted(PROBLEM_TYPES))
def test_every_problem_type_is_documented(slug: str):
    assert re.search(rf"\b{re.escape(slug)}\b", _docs()), (
        f"problem type {slug} is documented nowhere: add it to README.md's error table"
    )


def test_the_lookup_can_fail():
    """The shorthand reading finds what it should and nothing else."""
    names = _documented_names("| `CIVI_GATEWAY_HTTP_API_KEY` / `_SITE_KEY` | x |\nprose `CV_TIMEOUT`")
    assert {"HTTP_API_KEY", "HTTP_SITE_KEY"} <= names
    assert "CV_TIMEOUT" not in names
