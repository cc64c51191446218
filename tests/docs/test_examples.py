"""The documentation runs as written: every marked example in README.md and docs/*.md is run,
in order, against a fresh ``civicrm-gateway serve`` on the sandbox (a real uvicorn process on
127.0.0.1, in its own directory, so with its own state directory), and what it prints is
compared with the output the page shows. The convention is in ``tests/docs/examples.py``.

Each example is one test, named ``page:line-language``; running one alone first runs the
examples above it on its page (their ids and shell variables are its context).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, GatewayProcess
from tests.docs.examples import (
    COMMANDS,
    Example,
    Shell,
    extract,
    interpreter,
    localise,
    matches,
    run_file,
)

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [ex for page in PAGES for ex in extract(page, page.relative_to(ROOT).as_posix())]


class Page:
    """One page's gateway, shell and progress through its examples."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
        # The gateway's own console script and interpreter come first, as in its venv.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["CIVI_GATEWAY_SECRETS_DIR"] = str(workdir / "no-secrets")
        self.env = env
        self.gateway = GatewayProcess({}, workdir).wait_ready()
        self.shell = Shell(workdir, env)
        self.done: set[Example] = set()

    def run(self, example: Example) -> tuple[int, str, str]:
        """Exit status, standard output and where to look for more."""
        code = localise(example.code, self.gateway.port)
        if example.language == "sh":
            status, out = self.shell.run(code)
            return status, out, f"shell stderr: {self.shell.log}"
        status, out, err = run_file(example.language, code, self.workdir, self.env)
        return status, out, f"stderr:\n{err}"

    def close(self) -> str:
        self.shell.close()
        return self.gateway.stop()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Page]]:
    opened: dict[str, Page] = {}

    def page(name: str) -> Page:
        if name not in opened:
            opened[name] = Page(name, tmp_path_factory.mktemp(name.replace("/", "-")))
        return opened[name]

    yield page
    for p in opened.values():
        p.close()


def _missing(page: Page, example: Example) -> str | None:
    """What this example needs that is not installed (the shell examples use jq)."""
    if example.language == "sh":
        needs = "jq"
        found = shutil.which("jq", path=page.env["PATH"])
    else:
        needs = COMMANDS[example.language]
        found = interpreter(example.language, page.env["PATH"])
    return None if found else needs


def _check(page: Page, example: Example, *, quiet: bool) -> None:
    needs = _missing(page, example)
    if needs is not None:
        message = f"{example.id}: {needs} is not installed, so this example cannot run"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; tests/install-system-packages.sh installs it")
        if quiet:
            return
        pytest.skip(message)  # and the page's later examples fail or skip on their own
    status, out, more = page.run(example)
    page.done.add(example)
    expected = localise(example.expected, page.gateway.port)
    if status != 0 or not matches(expected, out):
        pytest.fail(
            f"{example.id}: the example's output differs from the page's "
            f"(exit status {status})\n--- example\n{example.code}\n--- shown\n"
            f"{expected}\n--- got\n{out}\n--- {more}",
            pytrace=False,
        )


def test_the_pages_have_examples():
    """The README's calls, the walk-through and the client examples of docs/calling.md, and
    the safe writes' examples are marked, so they are run."""
    per_page: dict[str, list[Example]] = {}
    for ex in EXAMPLES:
        per_page.setdefault(ex.doc, []).append(ex)
    assert len(per_page["README.md"]) >= 2
    assert len(per_page["docs/calling.md"]) >= 10
    assert {ex.language for ex in per_page["docs/calling.md"]} == {"sh", "python", "js", "php"}
    assert len(per_page["docs/safe-writes.md"]) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[ex.id for ex in EXAMPLES])
def test_example(pages, example: Example) -> None:
    page = pages(example.doc)
    # Run alone (-k), an example still gets its context: the examples above it on its page.
    for before in EXAMPLES[: EXAMPLES.index(example)]:
        if before.doc == example.doc and before not in page.done:
            _check(page, before, quiet=True)
    _check(page, example, quiet=False)
