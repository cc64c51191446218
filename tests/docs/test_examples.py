"""The documentation runs as written: every marked example in README.md and docs/*.md is run,
in order, against a fresh ``civicrm-gateway serve`` on the sandbox (a real uvicorn process on
127.0.0.1, in its own directory, so with its own state directory), and what it prints is
compared with the output the page shows. The convention is in ``tests/docs/examples.py``.

A page may need more than the plain sandbox gateway (``SETUPS``: docs/changes.md's webhook
receivers need webhooks on and a client's token); JavaScript examples may import the npm
packages pinned in ``tests/docs/node`` (``npm ci``, once).

Each example is one test, named ``page:line-language``; running one alone first runs the
examples above it on its page (their ids and shell variables are its context).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
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
# npm packages the JavaScript examples import, pinned in tests/docs/node (``npm ci``).
NODE_DIR = Path(__file__).parent / "node"


def _webhooks_setup(workdir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """docs/changes.md: a gateway that delivers webhooks to loopback, and a client that may
    subscribe, its token in ``$TOKEN`` (as the page says)."""
    token = f"cgw_{secrets.token_urlsafe(24)}"
    clients = workdir / "clients.toml"
    clients.write_text(
        f'[clients.sync]\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\nwebhooks = true\n',
        encoding="utf-8",
    )
    gateway = {"CIVI_GATEWAY_WEBHOOK_HOSTS": '["127.0.0.1"]', "CIVI_GATEWAY_CLIENTS_FILE": str(clients)}
    return gateway, {"TOKEN": token}


# Pages whose examples need more than the plain sandbox gateway: its settings, the examples' env.
SETUPS: dict[str, Callable[[Path], tuple[dict[str, str], dict[str, str]]]] = {
    "docs/changes.md": _webhooks_setup,
}


def _node_modules(workdir: Path) -> None:
    """The docs' npm packages, installed once (again when package-lock.json changes), seen by
    the examples run in ``workdir`` (Node looks for node_modules beside the script)."""
    if shutil.which("npm") is None:
        return  # the js examples then fail on their import, saying which package is missing
    lock = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = NODE_DIR / "node_modules" / ".civicrm-gateway-lock"
    if not stamp.is_file() or stamp.read_text() != lock:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        stamp.write_text(lock)
    (workdir / "node_modules").symlink_to(NODE_DIR / "node_modules", target_is_directory=True)


class Page:
    """One page's gateway, shell and progress through its examples."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
        # The gateway's own console script and interpreter come first, as in its venv.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["CIVI_GATEWAY_SECRETS_DIR"] = str(workdir / "no-secrets")
        settings: dict[str, str] = {}
        if name in SETUPS:
            settings, extra = SETUPS[name](workdir)
            env.update(extra)
        if any(ex.doc == name and ex.language == "js" for ex in EXAMPLES):
            _node_modules(workdir)
        self.env = env
        self.gateway = GatewayProcess(settings, workdir).wait_ready()
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
    # the webhook receivers, which verify a real delivery's signature
    assert {ex.language for ex in per_page["docs/changes.md"]} >= {"python", "js"}


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[ex.id for ex in EXAMPLES])
def test_example(pages, example: Example) -> None:
    page = pages(example.doc)
    # Run alone (-k), an example still gets its context: the examples above it on its page.
    for before in EXAMPLES[: EXAMPLES.index(example)]:
        if before.doc == example.doc and before not in page.done:
            _check(page, before, quiet=True)
    _check(page, example, quiet=False)
