"""The ``pipe`` backend: a pool of long-lived ``cv pipe`` workers speaking Civi::pipe.

Each worker is one ``cv pipe vtl`` process (CiviCRM booted once) in its own process group.
Protocol (JSON-RPC 2.0, one request line, one response line):

1. the worker prints a handshake line ``{"Civi::pipe":{"v":...,"t":"trusted","l":["login"]}}``;
2. the gateway sends ``options {"apiError":"array","bufferSize":N,"responsePrefix":"\x01\x01"}``:
   API errors come back as CiviCRM's own error arrays (APIv3 keeps its ``error_code``; CiviCRM
   5.77 defaults to ``exception``, older releases to ``array``: set it, never assume it), request
   lines up to N bytes are read whole (default 512 KiB; a longer line would be cut into
   pieces), and every response line starts with the prefix, so a PHP notice that reaches
   stdout is recognised as noise and skipped;
3. ``login {"user": cv_user}`` when a user is configured (trusted sessions only);
4. calls: ``api4`` / ``api3`` with ``[entity, action, params]``, permission mode forced.

One request at a time per worker; callers wait for a free worker (at most ``cv_timeout``). A
worker that dies, hangs past ``cv_timeout`` or breaks the protocol is killed (whole group) and
replaced in the background; its in-flight call is answered 502/504 and never replayed. After
``pipe_max_calls`` calls a worker is retired and replaced. ``close`` ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import GatewayError, from_civicrm
from ..results import Records
from ..settings import Settings
from .base import Backend
from .cv import with_permissions
from .cvproc import boot_failure as _boot_failure
from .cvproc import (
    check_names,
    check_user,
    command_prefix,
    kill_group,
    parse_console_error,
    reap,
    spawn,
    v3_result,
    v4_result,
)

if TYPE_CHECKING:
    from ..clients import Identity

log = logging.getLogger("gateway.pipe")

DEFAULT_BUFFER = 524_288  # Civi::pipe's default request-line limit
# Written by cv before each response line once set with ``options``: what is not prefixed is
# noise (a PHP notice printed on stdout), never taken for an answer.
PREFIX = "\x01\x01"
_PHP_NOISE = re.compile(rb"^(PHP )?(Deprecated|Notice|Warning|Strict Standards|Fatal error)\b|"
                        rb"^\[\d{2}-\w{3}-\d{4} ", re.IGNORECASE)
_READ_CHUNK = 1 << 16
_STDERR_KEEP = 16_384


class WorkerBroken(Exception):
    """The worker can no longer be trusted with a call; the GatewayError to answer with."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.detail)
        self.error = error


class RpcError(Exception):
    def __init__(self, code: int | None, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass
class Login:
    """Who a worker's session is logged in as: ("user", name) or ("cred", key)."""

    kind: str
    value: str = field(repr=False)


class PipeWorker:
    """One ``cv pipe`` process."""

    _ids = itertools.count(1)

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.number = next(self._ids)
        self.proc: asyncio.subprocess.Process | None = None
        self.calls = 0
        self.login: Login | None = None
        self.buffer_size = DEFAULT_BUFFER
        self.handshake: dict[str, Any] = {}
        self.prefix: bytes | None = None
        self._buf = bytearray()
        self._scan = 0
        self._request_ids = itertools.count(1)
        self._stderr = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None
        self._dead = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return (not self._dead and self.proc is not None and self.proc.returncode is None
                and not (self.proc.stdout is not None and self.proc.stdout.at_eof()
                         and not self._buf))

    # --- life cycle ------------------------------------------------------------------------
    async def start(self, *, buffer_size: int, trusted_needed: bool) -> None:
        self.proc = await spawn(self.argv)
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        await self._read_handshake(trusted_needed)
        wanted = {"apiError": "array", "bufferSize": buffer_size, "responsePrefix": PREFIX}
        try:
            result = await self.rpc("options", wanted, bounded=False)
        except RpcError as exc:
            raise GatewayError("upstream-invalid-response",
                               f"cv pipe refused the gateway's options: {exc.message}") from None
        if not isinstance(result, dict) or result.get("apiError") != "array":
            raise GatewayError("upstream-invalid-response",
                               f"cv pipe did not accept apiError=array (answered {result!r:.200}).")
        granted = result.get("bufferSize")
        self.buffer_size = granted if isinstance(granted, int) and granted > 0 else DEFAULT_BUFFER
        # Older CiviCRM has no responsePrefix: then every line must be a response.
        self.prefix = PREFIX.encode() if result.get("responsePrefix") == PREFIX else None

    async def _read_handshake(self, trusted_needed: bool) -> None:
        while True:
            try:
                line = await self._readline()
            except EOFError:
                raise await self._start_failure() from None
            text = line.strip()
            if not text:
                continue
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                log.warning("cv pipe printed before its handshake: %.200s", text.decode("utf-8",
                                                                                        "replace"))
                continue
            if not (isinstance(message, dict) and "Civi::pipe" in message):
                raise GatewayError("upstream-invalid-response",
                                   f"cv pipe's first line is not a Civi::pipe handshake: "
                                   f"{text[:200].decode('utf-8', 'replace')}")
            flags = message["Civi::pipe"]
            self.handshake = flags if isinstance(flags, dict) else {"flags": flags}
            if trusted_needed and isinstance(flags, dict) and flags.get("t") != "trusted":
                raise GatewayError(
                    "gateway-misconfigured",
                    "cv pipe opened an untrusted session; the gateway needs a trusted one to log "
                    "in as cv_user or to turn permission checks off.")
            return

    async def _start_failure(self) -> GatewayError:
        assert self.proc is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 2)
        stderr = self._stderr.decode("utf-8", "replace")
        error = parse_console_error(stderr)
        if error is not None and error.message:
            return _boot_failure(error.message, what="cv pipe")
        tail = stderr.strip()[-300:]
        return GatewayError("upstream-invalid-response",
                            f"cv pipe exited (code {self.proc.returncode}) before its handshake"
                            + (f": {tail}" if tail else "."))

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            chunk = await self.proc.stderr.read(_READ_CHUNK)
            if not chunk:
                return
            self._stderr += chunk
            if len(self._stderr) > _STDERR_KEEP:
                del self._stderr[:-_STDERR_KEEP]

    def stderr_tail(self, limit: int = 500) -> str:
        return self._stderr.decode("utf-8", "replace").strip()[-limit:]

    async def kill(self) -> None:
        """SIGKILL the worker's group and reap it."""
        self._dead = True
        if self.proc is None:
            return
        kill_group(self.proc)
        await reap(self.proc)
        await self._close_pipes()

    async def stop(self, grace: float = 2.0) -> None:
        """End the session politely (EOF on stdin), then kill whatever is left."""
        self._dead = True
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
        await self.kill()

    async def _close_pipes(self) -> None:
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()

    # --- protocol --------------------------------------------------------------------------
    async def _readline(self) -> bytes:
        """One line of any length (no StreamReader line limit)."""
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            index = self._buf.find(b"\n", self._scan)
            if index >= 0:
                line = bytes(self._buf[:index])
                del self._buf[:index + 1]
                self._scan = 0
                return line
            self._scan = len(self._buf)
            chunk = await self.proc.stdout.read(_READ_CHUNK)
            if not chunk:
                raise EOFError
            self._buf += chunk

    async def rpc(self, method: str, params: Any, *, bounded: bool = True) -> Any:
        """Send one request and return its result; RpcError for a JSON-RPC error.

        Raises WorkerBroken when the worker died or broke the protocol.
        """
        assert self.proc is not None and self.proc.stdin is not None
        request_id = next(self._request_ids)
        line = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params,
                             "id": request_id})
        if bounded and len(line) >= self.buffer_size:
            raise GatewayError("payload-too-large",
                               f"The call's params are {len(line)} bytes as JSON; cv pipe reads "
                               f"requests of less than {self.buffer_size} bytes.")
        try:
            self.proc.stdin.write(line + b"\n")
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise self._broken(f"cv pipe worker stopped reading ({exc}).") from None
        while True:
            try:
                raw = await self._readline()
            except EOFError:
                raise self._broken("cv pipe worker died before answering.") from None
            text = self._response_text(raw)
            if text is None:
                continue
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise self._broken("cv pipe worker answered a line that is not JSON.") from None
            if not isinstance(message, dict) or message.get("id") != request_id:
                raise self._broken("cv pipe worker answered out of turn "
                                   f"(expected id {request_id}): {text[:200]!r}")
            if "error" in message:
                error = message["error"] if isinstance(message["error"], dict) else {}
                raise RpcError(error.get("code"), str(error.get("message") or ""),
                               error.get("data"))
            if "result" not in message:
                raise self._broken("cv pipe worker answered without result or error.")
            return message["result"]

    def _response_text(self, raw: bytes) -> bytes | None:
        """The response in one stdout line, or None for noise (logged and skipped)."""
        marker = self.prefix if self.prefix is not None else PREFIX.encode()
        at = raw.find(marker)
        if at >= 0:  # a prefixed response, perhaps glued to a notice without its newline
            return raw[at + len(marker):].strip()
        text = raw.strip()
        if not text:
            return None
        if self.prefix is None and not _PHP_NOISE.search(text):
            return text
        log.warning("cv pipe worker %d printed noise: %.200s", self.number,
                    text.decode("utf-8", "replace"))
        return None

    def _broken(self, detail: str) -> WorkerBroken:
        self._dead = True
        tail = self.stderr_tail()
        log.warning("%s (worker %d, pid %s)%s", detail, self.number, self.pid,
                    f"; stderr: {tail}" if tail else "")
        return WorkerBroken(GatewayError("upstream-invalid-response", detail))


@dataclass
class _Slot:
    number: int
    worker: PipeWorker | None = None


def rpc_failure(exc: RpcError) -> GatewayError:
    if exc.code == -32099 or exc.code is None:
        return from_civicrm(exc.message)
    return GatewayError("upstream-error",
                        f"cv pipe refused the request (JSON-RPC {exc.code}: {exc.message}).",
                        civicrm={"error_code": exc.code, "error_message": exc.message})


class PipeBackend(Backend):
    name = "pipe"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.argv = [*command_prefix(settings), "pipe", "vtl"]
        self.size = settings.pipe_size
        # Requests up to the gateway's body limit (plus JSON-RPC framing) must fit in a line.
        self.buffer_size = max(DEFAULT_BUFFER, 2 * settings.max_body_bytes + 65_536)
        self._idle: asyncio.Queue[_Slot] = asyncio.Queue()
        self._slots: list[_Slot] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: set[PipeWorker] = set()
        self._closed = False
        self._queued = 0
        self.started_workers = 0
        self.restarts = 0  # workers replaced after dying, hanging or breaking the protocol
        self.recycled = 0  # workers retired after pipe_max_calls calls (or a failed login)
        self.calls = 0

    def stats(self) -> dict[str, float]:
        """Pool use for /metrics: size, busy and idle workers, queued callers, replacements."""
        idle = self._idle.qsize() if not self._closed else 0
        size = len(self._slots) if not self._closed else 0
        return {"size": size, "busy": size - idle, "idle": idle, "queued": self._queued,
                "restarts": self.restarts, "recycled": self.recycled, "calls": self.calls}

    # --- pool ------------------------------------------------------------------------------
    @property
    def _trusted_needed(self) -> bool:
        return bool(self.settings.cv_user) or not self.settings.cv_check_permissions

    def default_login(self) -> Login | None:
        return Login("user", check_user(self.settings.cv_user)) if self.settings.cv_user else None

    async def _spawn(self) -> PipeWorker:
        if self._closed:
            raise GatewayError("upstream-unavailable", "The gateway is shutting down.")
        worker = PipeWorker(self.argv)
        self._workers.add(worker)
        self.started_workers += 1
        try:
            async with asyncio.timeout(self.settings.pipe_start_timeout):
                await worker.start(buffer_size=self.buffer_size,
                                   trusted_needed=self._trusted_needed)
                await self._login(worker, self.default_login())
        except TimeoutError:
            await self._discard(worker)
            tail = worker.stderr_tail(300)
            raise GatewayError(
                "upstream-timeout",
                f"cv pipe did not complete its handshake within "
                f"{self.settings.pipe_start_timeout:g} s" + (f"; stderr: {tail}" if tail else ".")
            ) from None
        except (WorkerBroken, LoginRefused) as exc:
            await self._discard(worker)
            raise exc.error from None
        except BaseException:
            await self._discard(worker)
            raise
        log.info("cv pipe worker %d ready (pid %s, %s)", worker.number, worker.pid,
                 worker.handshake)
        return worker

    async def _discard(self, worker: PipeWorker) -> None:
        self._workers.discard(worker)
        await worker.kill()

    async def _login(self, worker: PipeWorker, login: Login | None) -> None:
        if login is None or worker.login == login:
            return
        worker.login = None
        params = {"user": login.value} if login.kind == "user" else {"cred": f"Bearer {login.value}"}
        try:
            result = await worker.rpc("login", params, bounded=False)
        except RpcError as exc:
            who = repr(login.value) if login.kind == "user" else "the client's API key"
            raise LoginRefused(GatewayError(
                "gateway-misconfigured", f"cv pipe could not log in as {who}: {exc.message}",
                civicrm={"error_code": exc.code, "error_message": exc.message})) from None
        if not isinstance(result, dict) or not result.get("contactId"):
            raise LoginRefused(GatewayError(
                "gateway-misconfigured", f"cv pipe's login answered no contact: {result!r:.200}"))
        worker.login = login

    async def start(self) -> None:
        """Start every worker; fails (RuntimeError naming the cause) if one cannot start."""
        self._closed = False
        slots = [_Slot(n) for n in range(self.size)]
        results = await asyncio.gather(*(self._spawn() for _ in slots), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for result in results:
                if isinstance(result, PipeWorker):
                    await self._discard(result)
            first = failures[0]
            detail = first.detail if isinstance(first, GatewayError) else repr(first)
            raise RuntimeError(f"cv pipe backend failed to start: {detail}") from first
        self._slots = slots
        for slot, worker in zip(slots, results, strict=True):
            assert isinstance(worker, PipeWorker)
            slot.worker = worker
            self._idle.put_nowait(slot)

    async def close(self) -> None:
        """Stop background replacements, then end every worker (EOF, then SIGKILL)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        workers = list(self._workers)
        self._workers.clear()
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        for slot in self._slots:
            slot.worker = None

    def _refill(self, slot: _Slot, old: PipeWorker | None = None) -> None:
        """Replace a slot's worker in the background (after ending ``old`` politely), then
        hand the slot back to the queue."""

        async def refill() -> None:
            if old is not None:
                await old.stop()
            try:
                slot.worker = await self._spawn()
            except Exception as exc:  # the next caller retries the start and sees the error
                slot.worker = None
                log.warning("cv pipe worker could not be replaced: %s", exc)
            finally:
                if not self._closed:
                    self._idle.put_nowait(slot)

        task = asyncio.create_task(refill())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retire(self, slot: _Slot, *, kill: bool) -> None:
        """Take the slot's worker out of service: killed now (broken or hung), or ended
        politely in the background (recycled); a replacement is started in the background."""
        worker, slot.worker = slot.worker, None
        if worker is not None:
            self._workers.discard(worker)
            if kill:
                self.restarts += 1
                await worker.kill()
                worker = None
            else:
                self.recycled += 1
        if self._closed:
            if worker is not None:
                await worker.kill()
            return
        self._refill(slot, worker)

    # --- calls -----------------------------------------------------------------------------
    def _login_for(self, identity: Identity | None) -> Login | None:
        if identity is not None and identity.cv_user:
            return Login("user", check_user(identity.cv_user))
        if identity is not None and identity.api_key:
            return Login("cred", identity.api_key)
        return self.default_login()

    async def _acquire(self, limit: float) -> _Slot:
        self._queued += 1
        try:
            return await asyncio.wait_for(self._idle.get(), limit)
        except TimeoutError:
            raise GatewayError("upstream-timeout",
                               f"No cv pipe worker became free within {limit:g} s "
                               f"({self.size} workers, all busy).") from None
        finally:
            self._queued -= 1

    async def _ready_worker(self, slot: _Slot, login: Login | None) -> PipeWorker:
        """The slot's worker, started afresh if it died while idle or cannot serve ``login``
        (a session cannot log out). Nothing of this call was sent yet: starting is safe."""
        worker = slot.worker
        if worker is not None and worker.alive and not (login is None and worker.login):
            return worker
        if worker is not None:
            if not worker.alive:
                log.warning("cv pipe worker %d (pid %s) died while idle; replacing it",
                            worker.number, worker.pid)
                self.restarts += 1
            self._workers.discard(worker)
            await worker.stop(grace=0.5)
            slot.worker = None
        slot.worker = await self._spawn()
        return slot.worker

    async def call(self, version: int, entity: str, action: str, params: dict[str, Any], *,
                   identity: Identity | None = None) -> Records:
        check_names(entity, action)
        if version not in (3, 4):
            raise GatewayError("invalid-request", f"Unknown API version {version}.")
        if self._closed or not self._slots:
            raise GatewayError("upstream-unavailable", "The cv pipe pool is not running.")
        login = self._login_for(identity)
        request = [entity, action, with_permissions(self.settings, version, params)]
        timeout = self.settings.cv_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        slot = await self._acquire(timeout)
        outcome = "kill"  # what to do with the worker afterwards: keep, recycle or kill
        try:
            worker = await self._ready_worker(slot, login)
            try:
                async with asyncio.timeout_at(deadline):
                    await self._login(worker, login)
                    result = await worker.rpc(f"api{version}", request)
            except TimeoutError:
                log.warning("cv pipe worker %d (pid %s) hung on %s.%s; killing it",
                            worker.number, worker.pid, entity, action)
                raise GatewayError(
                    "upstream-timeout",
                    f"cv pipe did not answer within {timeout:g} s; the worker was killed "
                    "(the call was not retried).") from None
            except WorkerBroken as exc:
                raise GatewayError(exc.error.slug,
                                   exc.error.detail + " The call was not retried.") from None
            except LoginRefused as exc:
                outcome = "recycle"  # still healthy, but its session's user is now unclear
                raise exc.error from None
            except RpcError as exc:
                outcome = "keep"  # CiviCRM's own refusal: the worker answered properly
                worker.calls += 1
                raise rpc_failure(exc) from None
            except GatewayError as exc:
                if exc.slug == "payload-too-large":  # refused before sending anything
                    outcome = "keep"
                raise
            worker.calls += 1
            outcome = "keep"
        finally:
            worker_now = slot.worker
            if outcome == "keep" and worker_now is not None \
                    and worker_now.calls >= self.settings.pipe_max_calls:
                log.info("cv pipe worker %d retired after %d calls", worker_now.number,
                         worker_now.calls)
                outcome = "recycle"
            if outcome == "keep" and worker_now is not None:
                self._idle.put_nowait(slot)
            else:
                await asyncio.shield(self._retire(slot, kill=outcome == "kill"))
        self.calls += 1
        if version == 4:
            return v4_result(result)
        return v3_result(action, result)


class LoginRefused(Exception):
    """CiviCRM refused a worker's login: the GatewayError to answer with."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.detail)
        self.error = error
