"""Process handling shared by the ``cv`` and ``pipe`` backends.

- argv building: the context prefix (``docker exec -i civicrm``), the cv command, ``--cwd``,
  ``--user``; never a shell, names validated again here;
- running one process with a deadline: its own session (process group), killed as a group on
  timeout or cancellation, always reaped;
- reading cv's output: JSON possibly surrounded by PHP notices, and the Symfony console box on
  stderr whose message is word-wrapped (``In Request.php line 51:`` ...) unwrapped back into
  CiviCRM's message;
- mapping a cv failure to a GatewayError (via ``errors.from_civicrm`` for CiviCRM's own errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.backends.config import CvConfig
from gateway.core.errors import UNCLEAR, GatewayError, from_civicrm, invalid_request
from gateway.core.params import NAME_RE
from gateway.core.results import Records, v3_records, v4_records

log = logging.getLogger("gateway.cv")

# What cv puts after --user= is one argv element (no shell), but refuse anything odd anyway.
USER_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")

# cv's boot failures: the site was not found, or the user to act as does not exist.
_BOOT_FILES = frozenset({"Bootstrap.php", "BootTrait.php", "CmsBootstrap.php"})
_BOOT_MESSAGES = re.compile(
    r"^Failed to locate civicrm\.settings\.php|^Failed to determine contactID for user=|"
    r"^Could not (find|locate|load) |^Please enable APIv4|^This version of CiviCRM does not "
    r"include Civi::pipe|^Failed to (boot|bootstrap|find)",
    re.IGNORECASE,
)
_USER_MESSAGES = re.compile(r"^Failed to determine contactID for user=", re.IGNORECASE)
# What a context prefix (docker exec, ssh, env) prints when it cannot reach or start cv.
_UNREACHABLE = re.compile(
    r"Error response from daemon|No such container|is not running|Cannot connect to the Docker "
    r"daemon|^ssh: |Could not resolve hostname|Connection (refused|timed out|closed)|"
    r"Permission denied \(publickey|No such file or directory|command not found|not found$|"
    r"executable file not found",
    re.IGNORECASE | re.MULTILINE,
)
# Exit codes of a shell, env, docker exec or ssh that could not run the command at all.
_NOT_RUN_CODES = frozenset({126, 127})


def check_names(entity: str, action: str) -> None:
    """Defence in depth: the routes check names already; nothing odd reaches an argv."""
    for kind, value in (("entity", entity), ("action", action)):
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            raise invalid_request(f"Invalid {kind} name {str(value)[:80]!r}.")


def check_user(user: str) -> str:
    if not USER_RE.fullmatch(user) or user.startswith("-"):
        raise GatewayError("gateway-misconfigured", "The configured cv user name is not usable.")
    return user


def command_prefix(config: CvConfig) -> list[str]:
    """``[*context, *cv_command]`` plus ``--cwd``: everything before the cv sub-command."""
    argv = [*config.cv_context, *config.cv_command]
    if not argv:
        raise GatewayError("gateway-misconfigured", "cv_command is empty.")
    if config.cv_cwd:
        argv.append(f"--cwd={config.cv_cwd}")
    return argv


# --- running processes -------------------------------------------------------------------------


@dataclass
class ProcessResult:
    returncode: int
    stdout: bytes
    stderr: bytes


def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process's whole group (it was started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def reap(proc: asyncio.subprocess.Process, wait: float = 5.0) -> None:
    """Wait for a killed process so it leaves no zombie (shielded from cancellation)."""
    waiter = asyncio.ensure_future(proc.wait())
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(waiter), wait)


def not_found(argv: list[str], exc: OSError) -> GatewayError:
    return GatewayError(
        "upstream-unavailable", f"Cannot run cv: {argv[0]!r} failed to start ({exc.strerror or exc})."
    )


def child_environment() -> dict[str, str]:
    """The gateway's environment minus its own settings: cv (and an ssh or docker prefix) must
    never receive the gateway's secrets (API keys, client tokens, the Redis URL)."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("CIVI_GATEWAY_")}


async def spawn(argv: list[str], *, stderr_to_pipe: bool = True) -> asyncio.subprocess.Process:
    """Start ``argv`` (no shell) in a new session, with pipes on stdin/stdout/stderr."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if stderr_to_pipe else asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=child_environment(),
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise not_found(argv, exc) from None


# Seconds between the gateway giving up on a call and cv being killed where it runs.
KILL_MARGIN = 1.0


def timeout_error(what: str, limit: float, *, remote: bool | None) -> GatewayError:
    """The 504 for a call that outlived ``limit``: honest about what may have happened.

    ``remote``: None when cv runs locally (its process group was killed), True when it runs
    through a context and was killed there too, False when only the context was killed."""
    if remote is None:
        where = "its processes were killed"
    elif remote:
        where = f"it was killed where it runs (within {KILL_MARGIN:g} s, through the context)"
    else:
        where = "the context process was killed, but cv itself may still be running where it runs"
    return GatewayError(
        "upstream-timeout",
        f"{what} did not answer within {limit:g} s; {where}. The call may still have taken "
        "effect in CiviCRM (a write may have been committed): check before repeating it.",
    )


async def run_process(
    argv: list[str],
    stdin: bytes,
    limit: float,
    *,
    remote: bool | None = None,
    configured: float | None = None,
) -> ProcessResult:
    """Run one cv process to completion within ``limit`` seconds.

    On timeout (or when the caller is cancelled) the whole process group is killed and the
    process reaped before this returns. ``remote``: cv runs through a context that bounds it
    there too (see ``CvBackend._bounded``); ``configured``: the limit to name in the 504 (the
    whole call's, when ``limit`` is what was left of it).
    """
    proc = await spawn(argv)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), limit)
    except TimeoutError:
        kill_group(proc)
        await reap(proc)
        raise timeout_error("cv", configured or limit, remote=remote) from None
    except BaseException:
        kill_group(proc)
        await reap(proc)
        raise
    # The leader is done; anything it left behind in its group goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return ProcessResult(proc.returncode if proc.returncode is not None else -1, stdout, stderr)


# --- reading cv's output ----------------------------------------------------------------------


@dataclass
class ConsoleError:
    """The exception box Symfony Console prints on stderr."""

    file: str
    line: int
    message: str


_BOX_TITLE = re.compile(r"^\s*In (\S+) line (\d+):\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_console_error(text: str) -> ConsoleError | None:
    """CiviCRM's message from cv's stderr console box, its wrapped lines joined again.

    Symfony splits each message line into chunks of exactly (terminal width - 5) characters,
    even mid-word, and pads every box line to the same width with two spaces each side. A line
    that reaches the box's last text column was cut and continues on the next line as is.
    PHP notices may surround the box; the first box is the outermost exception.
    """
    lines = _ANSI.sub("", text).splitlines()
    for index, raw in enumerate(lines):
        title = _BOX_TITLE.match(raw)
        if not title:
            continue
        rest = lines[index + 1 :]
        position = 0
        while position < len(rest) and not rest[position].strip():
            position += 1
        body: list[str] = []
        while position < len(rest) and rest[position].strip():
            body.append(rest[position])
            position += 1
        if not body:
            return ConsoleError(title.group(1), int(title.group(2)), "")
        width = max(len(line.rstrip()) for line in body)
        wrapped = len(body) > 1 and width >= 40
        parts: list[str] = []
        for number, line in enumerate(body):
            content = line[2:] if line.startswith("  ") else line.lstrip()
            full = wrapped and len(line.rstrip()) >= width and number < len(body) - 1
            if full:
                parts.append(content.rstrip("\n")[: width - 2])
            else:
                parts.append(content.rstrip() + ("" if number == len(body) - 1 else " "))
        return ConsoleError(title.group(1), int(title.group(2)), "".join(parts).strip())
    return None


_SCALAR_LINE = re.compile(r'-?\d+(\.\d+)?([eE][+-]?\d+)?|"(?:[^"\\]|\\.)*"|true|false|null')


def extract_json(text: str) -> Any:
    """The JSON document in cv's stdout, skipping PHP notices printed around it.

    Raises ValueError when there is none.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("cv printed nothing")
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^[ \t]*[\[{]", text, re.MULTILINE):
        try:
            value, _end = decoder.raw_decode(text, match.end() - 1)
        except ValueError:
            continue
        return value
    scalars = [line.strip() for line in text.splitlines() if _SCALAR_LINE.fullmatch(line.strip())]
    if len(scalars) == 1:
        return orjson.loads(scalars[0])
    raise ValueError("cv's output holds no JSON")


def describe_output(data: bytes, limit: int = 200) -> str:
    text = data.decode("utf-8", "replace").strip()
    return (text[:limit] + "...") if len(text) > limit else text


# --- mapping failures ---------------------------------------------------------------------------


def boot_failure(message: str, *, what: str = "cv") -> GatewayError:
    """cv could not boot CiviCRM: the site, or the user the gateway acts as, is wrong."""
    if _USER_MESSAGES.search(message):
        return GatewayError(
            "gateway-misconfigured",
            f"{what} could not act as the configured CiviCRM user: {message}",
            civicrm={"error_code": None, "error_message": message},
        )
    return GatewayError(
        "upstream-error",
        f"{what} could not boot CiviCRM: {message}",
        civicrm={"error_code": None, "error_message": message},
    )


def is_boot_failure(error: ConsoleError) -> bool:
    return error.file in _BOOT_FILES or bool(_BOOT_MESSAGES.search(error.message))


def failure_from_stderr(result: ProcessResult, *, what: str = "cv") -> GatewayError:
    """A failed cv run (non-zero exit, no usable stdout) as a GatewayError."""
    stderr = result.stderr.decode("utf-8", "replace")
    error = parse_console_error(stderr)
    if result.returncode < 0:
        log.warning(
            "%s was killed by signal %d; stderr: %s",
            what,
            -result.returncode,
            describe_output(result.stderr, 500),
        )
        return GatewayError(
            "upstream-invalid-response", f"{what} was killed by signal {-result.returncode} before answering."
        )
    if error is None and (result.returncode in _NOT_RUN_CODES or _UNREACHABLE.search(stderr)):
        # The context prefix (docker exec, ssh, env) or the cv command itself did not run.
        log.warning(
            "%s could not be run (exit %d): %s", what, result.returncode, describe_output(result.stderr, 500)
        )
        return GatewayError(
            "upstream-unavailable",
            f"{what} could not be run (exit code {result.returncode}); see the gateway's log.",
        )
    if error is None or not error.message:
        log.warning(
            "%s exited with code %d and no error message; stderr: %s",
            what,
            result.returncode,
            describe_output(result.stderr, 500),
        )
        return GatewayError(
            "upstream-invalid-response", f"{what} exited with code {result.returncode} without an answer."
        )
    if is_boot_failure(error):
        return boot_failure(error.message, what=what)
    if result.returncode == 255:
        # A PHP error (TypeError ...), not an API exception: CiviCRM itself failed.
        log.warning(
            "%s failed with a PHP error in %s line %d: %s", what, error.file, error.line, error.message
        )
        return GatewayError(
            "upstream-error",
            f"{what} failed with a PHP error: {error.message}",
            civicrm={"error_code": None, "error_message": error.message},
            upstream=UNCLEAR,  # this input, or CiviCRM down: the breaker probes
        )
    return from_civicrm(error.message)


def v3_result(action: str, data: Any) -> Records:
    """APIv3 results as cv and the pipe give them: bare values for getcount/getvalue, and the
    record for getsingle, besides the usual envelopes."""
    if action == "getvalue" and not (isinstance(data, dict) and "is_error" in data):
        return Records([data])
    if action == "getsingle" and isinstance(data, dict) and "is_error" not in data:
        return Records([data])
    return v3_records(action, data)


def v4_result(data: Any) -> Records:
    return v4_records(data)


__all__ = [
    "KILL_MARGIN",
    "ConsoleError",
    "ProcessResult",
    "boot_failure",
    "check_names",
    "check_user",
    "command_prefix",
    "extract_json",
    "failure_from_stderr",
    "is_boot_failure",
    "kill_group",
    "parse_console_error",
    "reap",
    "run_process",
    "spawn",
    "timeout_error",
    "v3_result",
    "v4_result",
]
