"""A ``cv``-compatible command over the sandbox: ``python -m gateway.sandbox.cv``.

Implements what the gateway uses of cv 0.3.56, with the same output shapes, exit codes and
error texts (see the captures in the project's protocol notes):

- ``api4 Entity.action [--in=json|args] [--out=json|json-pretty|json-strict]``: the records as a
  JSON list; ``checkPermissions`` is false unless the params say otherwise (as in cv);
- ``api`` / ``api3 Entity.action``: the APIv3 envelope on stdout (errors too, exit 1);
  ``getcount`` (and ``getvalue``) print the bare value;
- ``pipe [connection-flags]``: a Civi::pipe session (JSON-RPC 2.0, one line each way);
- global options ``--cwd=PATH``, ``--user=NAME`` (``-U NAME``), and the stand-in's own
  ``--db PATH`` (env ``CV_SANDBOX_DB``: the SQLite file shared by every process) and
  ``--boot-delay SECONDS`` (env ``CV_SANDBOX_BOOT_DELAY``: the PHP bootstrap cost to model).
  Without ``--db`` the "site" is found as cv finds ``civicrm.settings.php``: a file named
  ``civicrm.sandbox.sqlite`` in the working directory (or ``--cwd``) or one of its parents.

Errors are printed as Symfony Console does: a box on stderr whose message is cut into chunks
of 75 characters (an 80-column terminal), then the command's usage line. API exceptions exit 1,
PHP errors 255. Without a database the stand-in fails like cv outside a site
("Failed to locate civicrm.settings.php ..."); an unknown ``--user`` fails like cv does.

Fault hooks for tests only (environment): ``CV_SANDBOX_PID_FILE`` (append this process's pid
to the file at start), ``CV_SANDBOX_NOISE`` (``stdout`` / ``stderr``: print PHP deprecation
notices around the output, as a PHP with display_errors on does), ``CV_SANDBOX_GARBAGE``
(``1``, or a file path: while that file exists; print an HTML PHP fatal error instead of the
JSON answer: exit 0 from ``api4``/``api``, exit 255 from ``pipe``),
``CV_SANDBOX_CALL_DELAY`` (seconds to sleep before
each API call), ``CV_SANDBOX_DIE_AFTER`` (an action name, or ``*``: the process kills itself
with SIGKILL right after such a call ran, before answering).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any, BinaryIO, NoReturn

VERSION = "5.77.beta1"
SITE_FILE = "civicrm.sandbox.sqlite"  # what marks a "site" directory, like civicrm.settings.php
NOTICE = (
    "PHP Deprecated:  Creation of dynamic property CRM_Core_Foo::$bar is deprecated in "
    "/srv/civicrm/vendor/civicrm/civicrm-core/CRM/Core/Foo.php on line 42"
)
GARBAGE = (
    "<br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes exhausted in "
    "<b>/srv/civicrm/CRM/Core/DAO.php</b> on line <b>3166</b><br />"
)
WIDTH = 75  # Symfony wraps box lines at terminal width (80) - 5

SYNOPSIS = {
    "api4": "api4 [--in IN] [--out OUT] [--flat [FLAT]] [-T|--out=table] [-I|--out=list] "
    "[-J|--out=json-pretty] [-N|--dry-run] [--] <Entity.action> [<key=value>...]",
    "api": "api [--in IN] [--out OUT] [--flat [FLAT]] [-T|--out=table] [-I|--out=list] [--] "
    "<Entity.action> [<key=value>...]",
    "pipe": "pipe [<connection-flags>]",
}
SYNOPSIS["api3"] = SYNOPSIS["api"]

SETTINGS_NOT_FOUND = (
    "Failed to locate civicrm.settings.php. By default, this tool searches the parent "
    "directories for a standard CMS (Drupal, WordPress, etal) and standard civicrm.settings.php."
    " Symlinks and multisite configurations may interfere. To customize, set variable "
    "CIVICRM_SETTINGS to point to the preferred civicrm.settings.php."
)

# Where CiviCRM raises each kind of error (file and line shown in cv's box).
_ORIGINS = [
    (re.compile(r"^API \("), ("Request.php", 51)),
    (re.compile(r"^Api \S+ \S+ version \d+ does not exist"), ("AbstractEntity.php", 124)),
    (re.compile(r"^Invalid field|^Illegal"), ("Api4SelectQuery.php", 400)),
    (re.compile(r'^Parameter "where" is required'), ("AbstractUpdateAction.php", 84)),
    (re.compile(r"^Authorization failed"), ("Kernel.php", 269)),
    (re.compile(r"^Unknown api parameter"), ("AbstractAction.php", 206)),
    (re.compile(r"is not of the correct type"), ("AbstractAction.php", 224)),
    (re.compile(r"^Mandatory values missing"), ("DAOCreateAction.php", 86)),
    # PEAR DB errors are turned into exceptions by CRM_Core_Error's handler (round-2 capture).
    (re.compile(r"^DB Error"), ("Error.php", 973)),
    (re.compile(r"^Expected one \S+ but found \d+"), ("api.php", 138)),
    (re.compile(r"^Unable to parse sql expression"), ("SqlExpression.php", 143)),
]
_DEFAULT_ORIGIN = ("Exception.php", 45)


class CvExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# --- console output ----------------------------------------------------------------------------


def render_box(file: str, line: int, message: str) -> str:
    """Symfony Console's exception box, exactly as cv prints it on a non-tty stderr."""
    chunks: list[str] = []
    for paragraph in message.split("\n"):
        chunks.extend([paragraph[i : i + WIDTH] for i in range(0, len(paragraph), WIDTH)] or [""])
    length = max(len(chunk) for chunk in chunks) + 4
    blank = " " * length
    out = ["", f"In {file} line {line}:", blank]
    out.extend(f"  {chunk}{' ' * (length - 4 - len(chunk))}  " for chunk in chunks)
    out.extend([blank, ""])
    return "\n".join(out) + "\n"


def fail(
    command: str | None, message: str, *, code: int = 1, origin: tuple[str, int] | None = None
) -> NoReturn:
    file, line = origin or _origin(message)
    text = render_box(file, line, message)
    if command in SYNOPSIS:
        text += SYNOPSIS[command] + "\n\n"
    sys.stderr.write(text)
    sys.stderr.flush()
    raise CvExit(code)


def _origin(message: str) -> tuple[str, int]:
    for pattern, origin in _ORIGINS:
        if pattern.search(message):
            return origin
    return _DEFAULT_ORIGIN


def encode(value: Any, out: str) -> str:
    """As PHP's json_encode(): compact output escapes "/" and non-ASCII; pretty output
    (JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) indents by four spaces."""
    if out in ("json", "json-strict"):
        return json.dumps(value, separators=(",", ":")).replace("/", "\\/")
    return json.dumps(value, indent=4)


# --- arguments -----------------------------------------------------------------------------------

_VALUE_OPTIONS = {"cwd", "user", "db", "boot-delay", "in", "out", "level"}
_SHORT: dict[str, str | tuple[str, str]] = {
    "-U": "user",
    "-J": ("out", "json-pretty"),
    "-T": ("out", "table"),
    "-I": ("out", "list"),
}


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    positionals: list[str] = []
    command: str | None = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            positionals.extend(argv[index:])
            break
        if arg.startswith("--") and len(arg) > 2:
            name, has_value, value = arg[2:].partition("=")
            if name.startswith("out=") or (
                name == "out" and has_value and value in ("table", "list", "json-pretty")
            ):
                options["out"] = value or name[4:]
                continue
            if name not in _VALUE_OPTIONS:
                fail(command, f'The "--{name}" option does not exist.', origin=("ArgvInput.php", 223))
            if not has_value:
                if index >= len(argv):
                    fail(command, f'The "--{name}" option requires a value.', origin=("ArgvInput.php", 233))
                value = argv[index]
                index += 1
            options[name] = value
            continue
        if arg in _SHORT:
            target = _SHORT[arg]
            if isinstance(target, tuple):
                options[target[0]] = target[1]
            else:
                if index >= len(argv):
                    fail(command, f'The "{arg}" option requires a value.', origin=("ArgvInput.php", 233))
                options[target] = argv[index]
                index += 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            fail(command, f'The "{arg}" option does not exist.', origin=("ArgvInput.php", 168))
        positionals.append(arg)
        if command is None:
            command = arg
    return options, positionals


# --- boot -----------------------------------------------------------------------------------------


class Site:
    """The booted "CiviCRM": the shared sandbox database, serialised across processes."""

    def __init__(self, db: str) -> None:
        from gateway.sandbox.engine import Sandbox

        self.db = db
        self._lock_file = None if db == ":memory:" else open(db + ".lock", "a")
        demo = int(os.environ.get("CV_SANDBOX_DEMO", "0") or 0)
        with self.locked():
            self.sandbox = Sandbox(db, demo=demo)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if self._lock_file is None:
            yield
            return
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def users(self) -> list[dict[str, Any]]:
        with self.locked():
            return self.sandbox.users()

    def api4(
        self, entity: str, action: str, params: dict[str, Any], *, check: bool, contact_id: int | None
    ) -> dict[str, Any]:
        _call_delay()
        with self.locked():
            result = self.sandbox.api4(entity, action, params, check_permissions=check, contact_id=contact_id)
        _maybe_die(action)
        return result

    def api3(
        self, entity: str, action: str, params: dict[str, Any], *, check: bool, contact_id: int | None
    ) -> dict[str, Any]:
        _call_delay()
        with self.locked():
            result = self.sandbox.api3(entity, action, params, check_permissions=check, contact_id=contact_id)
        _maybe_die(action)
        return result


def _call_delay() -> None:
    delay = float(os.environ.get("CV_SANDBOX_CALL_DELAY", "0") or 0)
    if delay > 0:
        time.sleep(delay)


def _maybe_die(action: str) -> None:
    target = os.environ.get("CV_SANDBOX_DIE_AFTER")
    if target and target in ("*", action):
        os.kill(os.getpid(), signal.SIGKILL)


def find_site(start: str) -> str | None:
    """The site's database in ``start`` or a parent, as cv searches for civicrm.settings.php."""
    path = os.path.abspath(start)
    while True:
        candidate = os.path.join(path, SITE_FILE)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def _noise(stream: str) -> None:
    """A PHP notice on ``stream`` when the CV_SANDBOX_NOISE hook asks for one there."""
    if os.environ.get("CV_SANDBOX_NOISE") in (stream, "both"):
        out = sys.stdout if stream == "stdout" else sys.stderr
        out.write(NOTICE + "\n")
        out.flush()


def garbage_now() -> bool:
    """The CV_SANDBOX_GARBAGE hook: always (``1``) or while the file it names exists."""
    value = os.environ.get("CV_SANDBOX_GARBAGE")
    return value is not None and (value == "1" or os.path.exists(value))


def write_answer(text: str) -> None:
    """cv's JSON answer on stdout, with the noise or garbage the test hooks ask for."""
    if garbage_now():
        sys.stdout.write(GARBAGE + "\n")
        return
    _noise("stdout")
    sys.stdout.write(text)
    _noise("stdout")


def boot(command: str, options: dict[str, str]) -> tuple[Site, int | None]:
    delay = options.get("boot-delay") or os.environ.get("CV_SANDBOX_BOOT_DELAY") or "0"
    try:
        seconds = float(delay)
    except ValueError:
        seconds = 0.0
    db = options.get("db") or os.environ.get("CV_SANDBOX_DB")
    if db and db != ":memory:":
        db = os.path.abspath(db)
    if seconds > 0:
        time.sleep(seconds)
    _noise("stderr")
    cwd = options.get("cwd")
    if cwd is not None:
        if not os.path.isdir(cwd):
            fail(command, SETTINGS_NOT_FOUND, origin=("Bootstrap.php", 174))
        os.chdir(cwd)
    if not db:
        db = find_site(os.getcwd())
    if not db or (db != ":memory:" and not os.path.isdir(os.path.dirname(db))):
        fail(command, SETTINGS_NOT_FOUND, origin=("Bootstrap.php", 174))
    site = Site(db)
    contact_id = None
    user = options.get("user")
    if user is not None:
        match = [u for u in site.users() if u["username"] == user]
        if not match:
            fail(command, f"Failed to determine contactID for user={user}", origin=("BootTrait.php", 195))
        contact_id = match[0]["contact_id"]
    return site, contact_id


# --- api4 / api3 ----------------------------------------------------------------------------------


def _php_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def read_params(command: str, options: dict[str, str], args: list[str]) -> dict[str, Any]:
    mode = options.get("in", "args")
    if mode == "json":
        raw = sys.stdin.buffer.read()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, list):
            return {str(i): v for i, v in enumerate(data)}
        if not isinstance(data, dict):
            fail(
                command,
                f"array_merge(): Argument #2 must be of type array, {_php_type(data)} given",
                code=255,
                origin=("Api4Command.php" if command == "api4" else "ApiCommand.php", 183),
            )
        return data
    if mode != "args":
        fail(command, "Unknown input format", origin=(f"{_class(command)}.php", 190))
    params: dict[str, Any] = {}
    for arg in args:
        if arg.startswith("{"):
            try:
                params.update(json.loads(arg))
            except ValueError:
                fail(command, f"Malformed JSON: {arg}", origin=("Api4ArgParser.php", 81))
            continue
        key, _, value = arg.partition("=")
        if value[:1] in ("[", "{", '"'):
            try:
                params[key] = json.loads(value)
                continue
            except ValueError:
                pass
        params[key] = value
    return params


def _class(command: str) -> str:
    return "Api4Command" if command == "api4" else "ApiCommand"


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "0", "", "false")


def _split_target(command: str, positionals: list[str]) -> tuple[str, str]:
    if len(positionals) < 2:
        fail(command, 'Not enough arguments (missing: "Entity.action").', origin=("Command.php", 312))
    entity, _, action = positionals[1].partition(".")
    return entity, action


def run_api4(options: dict[str, str], positionals: list[str]) -> int:
    from gateway.sandbox.errors import CiviError

    entity, action = _split_target("api4", positionals)
    site, contact_id = boot("api4", options)
    data = read_params("api4", options, positionals[2:])
    params = {"checkPermissions": False, **data}
    params.pop("version", None)
    check = _truthy(params.get("checkPermissions"))
    try:
        envelope = site.api4(entity, action, params, check=check, contact_id=contact_id)
    except CiviError as exc:
        fail("api4", exc.message)
    out = options.get("out", os.environ.get("CV_OUTPUT", "json-pretty"))
    if out not in ("json", "json-pretty", "json-strict"):
        fail("api4", f"Unsupported output format: {out}", origin=("Encoder.php", 56))
    write_answer(encode(envelope.get("values", []), out) + "\n")
    return 0


def run_api3(command: str, options: dict[str, str], positionals: list[str]) -> int:
    entity, action = _split_target(command, positionals)
    site, contact_id = boot(command, options)
    params = read_params(command, options, positionals[2:])
    params.pop("version", None)
    check = _truthy(params.pop("check_permissions", False))
    result = site.api3(entity, action, params, check=check, contact_id=contact_id)
    out = options.get("out", os.environ.get("CV_OUTPUT", "json-pretty"))
    if out not in ("json", "json-pretty", "json-strict"):
        out = "json-pretty"
    value: Any = result
    if not result.get("is_error") and action.lower() in ("getcount", "getvalue") and "result" in result:
        value = result["result"]  # civicrm_api() answers these with the bare value
    write_answer(encode(value, out) + "\n\n")
    return 1 if isinstance(result, dict) and result.get("is_error") else 0


# --- pipe ------------------------------------------------------------------------------------------


class PipeSession:
    """Civi::pipe over stdin/stdout: JSON-RPC 2.0, one line per request and response."""

    METHOD = re.compile(r"^[a-z][a-zA-Z0-9_]*$")

    def __init__(self, site: Site, flags: str, contact_id: int | None) -> None:
        self.site = site
        self.flags = flags
        self.trusted = "t" in flags and "u" not in flags
        self.contact_id = contact_id
        self.api_error = "exception"
        self.buffer_size = 524288
        self.response_prefix: str | None = None
        self.api_check_permissions = True

    def handshake(self) -> str:
        info: dict[str, Any] = {}
        for flag in self.flags:
            if flag == "v":
                info["v"] = VERSION
            elif flag == "t":
                info["t"] = "trusted"
            elif flag == "u":
                info["u"] = "untrusted"
            elif flag == "l":
                info["l"] = ["login"]
        return json.dumps({"Civi::pipe": info}, separators=(",", ":"))

    def run(self, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.write(stdout, self.handshake())
        for raw in self._lines(stdin):
            line = raw.rstrip(b"\n")
            if not line.strip():
                continue
            response = self.on_request(line)
            if os.environ.get("CV_SANDBOX_NOISE") in ("stdout", "both"):
                stdout.write(b"\n" + NOTICE.encode() + b"\n")
            if garbage_now() and re.search(rb'"method":\s*"api', line):
                # A PHP fatal error in an API call: its HTML on stdout, then PHP exits with 255.
                stdout.write(GARBAGE.encode() + b"\n")
                stdout.flush()
                raise CvExit(255)
            self.write(stdout, response)

    def _lines(self, stdin: BinaryIO) -> Iterator[bytes]:
        """Like PHP's stream_get_line(): a line, or ``bufferSize`` bytes of a longer one."""
        buf = b""
        while True:
            index = buf.find(b"\n")
            if 0 <= index < self.buffer_size:
                yield buf[:index]
                buf = buf[index + 1 :]
                continue
            if len(buf) >= self.buffer_size:
                yield buf[: self.buffer_size]
                buf = buf[self.buffer_size :]
                continue
            chunk = stdin.read1(65536) if hasattr(stdin, "read1") else stdin.read(65536)
            if not chunk:
                if buf:
                    yield buf
                return
            buf += chunk

    def write(self, stdout: BinaryIO, line: str) -> None:
        if self.response_prefix is not None:
            stdout.write(self.response_prefix.encode())
        stdout.write(line.encode() + b"\n")
        stdout.flush()

    @staticmethod
    def _dump(value: Any) -> str:
        return encode(value, "json")

    def on_request(self, line: bytes) -> str:
        try:
            parsed = json.loads(line)
        except ValueError:
            parsed = None
        if parsed is None:
            return self._dump(self._error({}, -32700, "Parse error"))
        if isinstance(parsed, list) and parsed:
            return self._dump([self.handle(request) for request in parsed])
        if isinstance(parsed, dict) and "method" in parsed:
            return self._dump(self.handle(parsed))
        return self._dump(self._error({}, -32600, "Invalid Request"))

    @staticmethod
    def _error(request: Any, code: int, message: str) -> dict[str, Any]:
        response: dict[str, Any] = {
            "jsonrpc": request.get("jsonrpc", "2.0") if isinstance(request, dict) else "2.0",
            "error": {"code": code, "message": message, "data": None},
        }
        if isinstance(request, dict) and "id" in request:
            response["id"] = request["id"]
        return response

    def handle(self, request: Any) -> dict[str, Any]:
        from gateway.sandbox.errors import CiviError

        if not isinstance(request, dict):
            return self._error({}, -32700, "Parse error")
        if request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
            return self._error(request, -32600, "Invalid Request")
        method = request["method"].replace(".", "_")
        handler = getattr(self, f"rpc_{method}", None) if self.METHOD.match(method) else None
        if handler is None:
            return self._error(request, -32601, "Method not found")
        try:
            result = handler(request.get("params", []))
        except CiviError as exc:
            return self._error(request, -32099, exc.message)
        except PipeError as exc:
            return self._error(request, exc.code, exc.message)
        response: dict[str, Any] = {"jsonrpc": "2.0", "result": result}
        if "id" in request:
            response["id"] = request["id"]
        return response

    # methods
    def rpc_echo(self, params: Any) -> Any:
        return params

    def _tuple(self, params: Any) -> tuple[str, str, dict[str, Any]]:
        if not isinstance(params, list) or len(params) < 2:
            raise PipeError(-32099, "Invalid API request: expected [entity, action, params]")
        call_params = params[2] if len(params) > 2 and params[2] is not None else {}
        if isinstance(call_params, list) and not call_params:
            call_params = {}
        if not isinstance(call_params, dict):
            raise PipeError(
                -32099, f"array_merge(): Argument #2 must be of type array, {_php_type(call_params)} given"
            )
        return str(params[0]), str(params[1]), call_params

    def _check_mode(self) -> None:
        if self.api_error not in ("array", "exception"):
            raise PipeError(-32099, f"Invalid API error-handling mode: {self.api_error}")

    def rpc_api4(self, params: Any) -> Any:
        from gateway.sandbox.errors import CiviError

        self._check_mode()
        entity, action, call_params = self._tuple(params)
        merged = {"checkPermissions": self.api_check_permissions, **call_params}
        merged.pop("version", None)
        if not self.trusted:  # untrusted sessions always check permissions
            merged["checkPermissions"] = True
        check = _truthy(merged.get("checkPermissions"))
        try:
            envelope = self.site.api4(entity, action, merged, check=check, contact_id=self.contact_id)
        except CiviError as exc:
            if self.api_error == "exception":
                raise
            return {
                "error_code": exc.v3_code or exc.error_code,
                "entity": None,
                "action": None,
                "is_error": 1,
                "error_message": exc.message,
            }
        return envelope.get("values", [])

    def rpc_api3(self, params: Any) -> Any:
        self._check_mode()
        entity, action, call_params = self._tuple(params)
        merged = {"check_permissions": True, **call_params}
        merged.pop("version", None)
        check = _truthy(merged.pop("check_permissions")) or not self.trusted
        result = self.site.api3(entity, action, merged, check=check, contact_id=self.contact_id)
        if result.get("is_error"):
            if self.api_error == "exception":
                raise PipeError(-32099, str(result.get("error_message") or "API error"))
            return result
        if action.lower() in ("getcount", "getvalue") and "result" in result:
            return result["result"]
        return result

    def rpc_login(self, params: Any) -> Any:
        if not isinstance(params, dict):
            raise PipeError(-32099, "Invalid credential")
        users = self.site.users()
        if "user" in params or "contactId" in params:
            if not self.trusted:
                raise PipeError(-32099, "Session is not trusted.")
            if "user" in params:
                for number, user in enumerate(users, start=1):
                    if user["username"] == params["user"]:
                        self.contact_id = user["contact_id"]
                        return {"contactId": user["contact_id"], "userId": number}
                raise PipeError(-32099, "Invalid credential")
            contact = params["contactId"]
            user_id = next((n for n, u in enumerate(users, start=1) if u["contact_id"] == contact), None)
            if not isinstance(contact, int):
                raise PipeError(-32099, "Invalid credential")
            self.contact_id = contact
            return {"contactId": contact, "userId": user_id}
        cred = params.get("cred")
        if isinstance(cred, str) and cred.startswith("Bearer "):
            key = cred[len("Bearer ") :]
            for number, user in enumerate(users, start=1):
                if user["api_key"] and user["api_key"] == key:
                    self.contact_id = user["contact_id"]
                    return {"contactId": str(user["contact_id"]), "userId": number}
        raise PipeError(-32099, "Invalid credential")

    def rpc_options(self, params: Any) -> Any:
        storage = {"apiError": "api_error", "bufferSize": "buffer_size", "responsePrefix": "response_prefix"}
        if self.trusted:
            storage["apiCheckPermissions"] = "api_check_permissions"
        result: dict[str, Any] = {}
        if isinstance(params, dict) and params:
            for name, value in params.items():
                if name in storage:
                    if name == "bufferSize":
                        if (
                            isinstance(value, bool)
                            or not isinstance(value, int | str)
                            or not str(value).isdigit()
                        ):
                            raise PipeError(
                                -32099, "setBufferSize(): Argument #1 ($bufferSize) must be of type int"
                            )
                        value = int(value)
                    setattr(self, storage[name], value)
                    result[name] = getattr(self, storage[name])
        else:
            result = {name: getattr(self, attr) for name, attr in storage.items()}
        return result


class PipeError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def run_pipe(options: dict[str, str], positionals: list[str]) -> int:
    flags = positionals[1] if len(positionals) > 1 else "vtl"
    site, contact_id = boot("pipe", options)
    session = PipeSession(site, flags, contact_id)
    session.run(sys.stdin.buffer, sys.stdout.buffer)
    return 0


# --- entry point -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pid_file = os.environ.get("CV_SANDBOX_PID_FILE")
    if pid_file:
        with open(pid_file, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    try:
        options, positionals = parse_args(argv)
        if not positionals:
            fail(None, 'Command "list" is not supported by the cv stand-in.', origin=("Application.php", 649))
        command = positionals[0]
        if command == "api4":
            return run_api4(options, positionals)
        if command in ("api", "api3"):
            return run_api3(command, options, positionals)
        if command == "pipe":
            return run_pipe(options, positionals)
        fail(None, f'Command "{command}" is not defined.', origin=("Application.php", 649))
    except CvExit as exc:
        return exc.code
    except BrokenPipeError:
        return 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
