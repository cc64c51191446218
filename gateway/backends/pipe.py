"""The ``pipe`` backend: a pool of long-lived ``cv pipe`` workers speaking Civi::pipe.

Each worker is one ``cv pipe vtl`` process (CiviCRM booted once) in its own process group.
Protocol (JSON-RPC 2.0, one request line, one response line):

1. the worker prints a handshake line ``{"Civi::pipe":{"v":...,"t":"trusted","l":["login"]}}``;
2. the gateway sends ``options {"apiError":"array","bufferSize":N}``: API errors come back as
   CiviCRM's own error arrays (APIv3 keeps its ``error_code``), and request lines up to N bytes
   are read whole (cv's default is 512 KiB; a longer line would be cut into pieces);
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
        try:
            await self._read_handshake(trusted_needed)
            result = await self.rpc("options", {"apiError": "array", "bufferSize": buffer_size},
                                    bounded=False)
        except RpcError as exc:
            raise GatewayError("upstream-invalid-response",
                               f"cv pipe refused the gateway's options: {exc.message}") from None
        if not isinstance(result, dict) or result.get("apiError") != "array":
            raise GatewayError("upstream-invalid-response",
                               f"cv pipe did not accept apiError=array (answered {result!r:.200}).")
        granted = result.get("bufferSize")
        self.buffer_size = granted if isinstance(granted, int) and granted > 0 else DEFAULT_BUFFER

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
            text = raw.strip()
            if not text:
                continue
            if text[:1] not in (b"{", b"["):
                # A PHP notice printed on stdout: not part of the protocol.
                log.warning("cv pipe worker %d printed noise: %.200s", self.number,
                            text.decode("utf-8", "replace"))
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
        self.started_workers = 0

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
            raise GatewayError(
                "upstream-timeout",
                f"cv pipe did not complete its handshake within "
                f"{self.settings.pipe_start_timeout:g} s"
                + (f"; stderr: {worker.stderr_tail(300)}" if worker.stderr_tail() else ".")
            ) from None
        except WorkerBroken as exc:
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
            raise GatewayError("gateway-misconfigured",
                               f"cv pipe could not log in as {who}: {exc.message}",
                               civicrm={"error_code": exc.code, "error_message": exc.message}
                               ) from None
        if not isinstance(result, dict) or not result.get("contactId"):
            raise GatewayError("gateway-misconfigured",
                               f"cv pipe's login answered no contact: {result!r:.200}")
        worker.login = login

    async def start(self) -> None:
        self._closed = False
        self._slots = [_Slot(n) for n in range(self.size)]
        results = await asyncio.gather(*(self._spawn() for _ in self._slots),
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for result in results:
                if isinstance(result, PipeWorker):
                    await self._discard(result)
            first = failures[0]
            detail = first.detail if isinstance(first, GatewayError) else repr(first)
            raise RuntimeError(f"cv pipe backend failed to start: {detail}") from first
        for slot, worker in zip(self._slots, results, strict=True):
            assert isinstance(worker, PipeWorker)
            slot.worker = worker
            self._idle.put_nowait(slot)

    async def close(self) -> None:
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
                await worker.kill()
                worker = None
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

    async def call(self, version: int, entity: str, action: str, params: dict[str, Any], *,
                   identity: Identity | None = None) -> Records:
        check_names(entity, action)
        if version not in (3, 4):
            raise GatewayError("invalid-request", f"Unknown API version {version}.")
        if self._closed or not self._slots:
            raise GatewayError("upstream-unavailable", "The cv pipe pool is not running.")
        login = self._login_for(identity)
        timeout = self.settings.cv_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            slot = await asyncio.wait_for(self._idle.get(), timeout)
        except TimeoutError:
            raise GatewayError("upstream-timeout",
                               f"No cv pipe worker became free within {timeout:g} s "
                               f"({self.size} workers, all busy).") from None
        keep = False
        try:
            worker = slot.worker
            if worker is None or not worker.alive:
                if worker is not None:
                    log.warning("cv pipe worker %d (pid %s) died while idle; replacing it",
                                worker.number, worker.pid)
                    self._workers.discard(worker)
                    await worker.kill()
                    slot.worker = None
                worker = slot.worker = await self._spawn()  # nothing was sent: safe to start
            if login is None and worker.login is not None:
                # Cannot log out of a session: start a fresh one.
                self._workers.discard(worker)
                await worker.stop()
                worker = slot.worker = await self._spawn()
            request = [entity, action, with_permissions(self.settings, version, params)]
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
            worker.calls += 1
            keep = True
        except RpcError as exc:
            keep = True
            raise rpc_failure(exc) from None
        except GatewayError as exc:
            # Refused before sending (too large, login refused): the worker is still good.
            keep = exc.slug in ("payload-too-large", "gateway-misconfigured") and \
                slot.worker is not None and slot.worker.alive
            raise
        finally:
            if keep and slot.worker is not None and slot.worker.calls < self.settings.pipe_max_calls:
                self._idle.put_nowait(slot)
            elif keep and slot.worker is not None:
                log.info("cv pipe worker %d retired after %d calls", slot.worker.number,
                         slot.worker.calls)
                await asyncio.shield(self._retire(slot, kill=False))
            else:
                await asyncio.shield(self._retire(slot, kill=True))
        if version == 4:
            return v4_result(result)
        return v3_result(action, result)

    async def check(self) -> None:
        await self.call(4, "Contact", "get", {"select": ["id"], "limit": 1})
