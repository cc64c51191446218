"""Executable documentation: find the marked examples in a Markdown page and run them.

The convention (README.md says it too, for those who add examples):

- An example is a fenced block in ``sh``, ``python``, ``js`` or ``php`` that is followed
  directly (blank lines allowed, nothing else) by a fenced ``output`` block. Blocks without an
  ``output`` block after them are documentation only and never run.
- ``sh`` examples run in order in one ``bash`` session, as a user would type them: shell
  variables set by one (``ID=$(...)``) are there for the next. The other languages run as a
  file with their interpreter. Only standard output is compared.
- In an ``output`` block, ``...`` stands for any text (volatile dates, long records); the rest
  must match exactly (trailing spaces and ``\\r`` are ignored).
- ``localhost:8000`` and ``127.0.0.1:8000`` are the gateway under test, wherever it listens.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import select
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = {"sh", "python", "js", "php"}
_FENCE = re.compile(r"^(```+)\s*([\w-]*)[^\n]*$")


@dataclass(frozen=True)
class Example:
    doc: str
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    expected: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}-{self.language}"


def _blocks(text: str) -> list[tuple[int, str, str, int]]:
    """(line, info word, body, end line) of each fenced block, in order."""
    lines = text.split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match.group(1), match.group(2)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence):
            body.append(lines[j])
            j += 1
        blocks.append((i + 1, info, "\n".join(body), j + 1))
        i = j + 1
    return blocks


def extract(path: Path, name: str) -> list[Example]:
    """The marked examples of one Markdown file."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    blocks = _blocks(text)
    examples = []
    for (line, info, body, end), following in itertools.pairwise(blocks):
        between = lines[end : following[0] - 1]
        if info in LANGUAGES and following[1] == "output" and all(not part.strip() for part in between):
            examples.append(Example(name, line, info, body, following[2]))
    return examples


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r", "").split("\n")).strip("\n")


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is ``expected`` with each ``...`` standing for any text."""
    parts = [re.escape(part) for part in normalise(expected).split("...")]
    return re.fullmatch(".*?".join(parts), normalise(actual), re.DOTALL) is not None


def localise(text: str, port: int) -> str:
    """The documented address, replaced by the test gateway's."""
    return re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{port}", text)


class Shell:
    """One long-lived ``bash`` that runs the sh examples in order, like a user's terminal."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.stderr = (cwd / "shell-stderr.log").open("wb")
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.log = cwd / "shell-stderr.log"

    def run(self, code: str, timeout: float = 120) -> tuple[int, str]:
        """Run ``code``; its exit status (of the last command) and standard output."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        marker = f"__example_done_{uuid.uuid4().hex}__"
        self.proc.stdin.write(f"{code}\nprintf '\\n{marker} %s\\n' \"$?\"\n".encode())
        self.proc.stdin.flush()
        out = b""
        deadline = time.monotonic() + timeout
        pattern = re.compile(rb"\n" + marker.encode() + rb" (\d+)\n")
        while True:
            found = pattern.search(out)
            if found:
                return int(found.group(1)), out[: found.start()].decode("utf-8", "replace")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise TimeoutError(
                    f"example did not finish in {timeout}s; output so far:\n{out.decode('utf-8', 'replace')}"
                )
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                out += os.read(self.proc.stdout.fileno(), 65536)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


COMMANDS = {"python": "python3", "js": "node", "php": "php"}


def interpreter(language: str, path: str | None = None) -> list[str] | None:
    """The command that runs a ``language`` example file (looked up on ``path``), or None if
    it is not installed."""
    found = shutil.which(COMMANDS[language], path=path)
    return [found] if found else None


SUFFIX = {"python": ".py", "js": ".mjs", "php": ".php"}


def run_file(
    language: str, code: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> tuple[int, str, str]:
    command = interpreter(language, env.get("PATH"))
    assert command is not None
    script = cwd / f"example-{uuid.uuid4().hex[:8]}{SUFFIX[language]}"
    script.write_text(code + "\n", encoding="utf-8")
    done = subprocess.run(
        [*command, str(script)], cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False
    )
    return (done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))
