"""One ``cv pipe`` worker: a long-lived process speaking Civi::pipe (JSON-RPC 2.0, one line
each way), and the faults it can report. The pool around it is ``gateway.backends.pipe``.

Through a context (``docker exec``, ``ssh``) killing the local process does not end cv where
it runs, so the worker is then started as ``sh -c 'echo civi-gateway-pid $$; exec "$@"' ...``:
the line before the handshake tells its pid there, and a worker killed because it hung (or
ignored EOF on a polite stop) is also killed there, through the same context. The shell's script is a
constant; cv's argv reaches it as positional parameters and params never pass through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.backends.cvproc import ProcessResult, failure_from_stderr, kill_group, reap, run_process, spawn
from gateway.core.errors import UNCLEAR, GatewayError, from_civicrm

log = logging.getLogger("gateway.pipe")

DEFAULT_BUFFER = 524_288  # Civi::pipe's default request-line limit
# Written by cv before each response line once set with ``options``: what is not prefixed is
# noise (a PHP notice printed on stdout), never taken for an answer.
PREFIX = "\x01\x01"
_PHP_NOISE = re.compile(
    rb"^(PHP )?(Deprecated|Notice|Warning|Strict Standards|Fatal error)\b|"
    rb"^\[\d{2}-\w{3}-\d{4} ",
    re.IGNORECASE,
)
_READ_CHUNK = 1 << 16
_STDERR_KEEP = 16_384
# Run inside the context: report this shell's pid (which exec makes cv's), then become cv.
REPORT_PID = 'echo "civi-gateway-pid $$"; exec "$@"'
KILL_PID = 'kill -s KILL "$1"'
_PID_LINE = re.compile(rb"^civi-gateway-pid (\d+)$")


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


class WorkerDied(GatewayError):
    """The worker died or broke the protocol during the call (it may have run)."""


class LoginRefused(Exception):
    """CiviCRM refused a worker's login: the GatewayError to answer with."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.detail)
        self.error = error


def rpc_failure(exc: RpcError) -> GatewayError:
    """A JSON-RPC error answered to an API call.

    With ``apiError=array`` (always set, see ``PipeWorker.start``) CiviCRM's API exceptions
    come back as error arrays, so -32099 is what is left: PHP failed (a TypeError, a fatal
    error), the failure ``cv`` reports as exit 255 and REST as an HTTP 500 without JSON, and
    answered the same way (502 upstream-error). A code-less error is read like CiviCRM's
    message; any other code is cv pipe refusing the request itself."""
    if exc.code == -32099:
        log.warning("cv pipe: PHP failed during an API call: %s", exc.message[:300])
        return GatewayError(
            "upstream-error",
            f"cv pipe failed with a PHP error: {exc.message}",
            civicrm={"error_code": None, "error_message": exc.message},
            upstream=UNCLEAR,  # this input, or CiviCRM down: the breaker probes
        )
    if exc.code is None:
        return from_civicrm(exc.message)
    return GatewayError(
        "upstream-error",
        f"cv pipe refused the request (JSON-RPC {exc.code}: {exc.message}).",
        civicrm={"error_code": exc.code, "error_message": exc.message},
    )


@dataclass
class Login:
    """Who a worker's session is logged in as: ("user", name) or ("cred", key)."""

    kind: str
    value: str = field(repr=False)


def _lower_group(pid: int, nice: int) -> None:
    """A process in a session of its own is, on Linux with autogroups, a scheduling group of
    its own, weighed against the others by the group's nice value, not its own: lower that."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as group:
        group.write(str(nice))


class PipeWorker:
    """One ``cv pipe`` process.

    ``kill_argv``, when given, is the argv prefix that kills a pid where cv runs (the context
    plus ``sh -c KILL_PID``); the worker then expects its pid line before the handshake.
    ``nice`` > 0 lowers the process's CPU priority by that much (background work).
    """

    _ids = itertools.count(1)

    def __init__(self, argv: list[str], kill_argv: list[str] | None = None, *, nice: int = 0) -> None:
        self.argv = argv
        self.kill_argv = kill_argv
        self.nice = nice
        self.number = next(self._ids)
        self.proc: asyncio.subprocess.Process | None = None
        self.calls = 0
        self.login: Login | None = None
        self.buffer_size = DEFAULT_BUFFER
        self.handshake: dict[str, Any] = {}
        self.prefix: bytes | None = None
        self.remote_pid: int | None = None  # cv's pid where it runs (through a context)
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
        return (
            not self._dead
            and self.proc is not None
            and self.proc.returncode is None
            and not (self.proc.stdout is not None and self.proc.stdout.at_eof() and not self._buf)
        )

    # --- life cycle ------------------------------------------------------------------------
    async def start(self, *, buffer_size: int, trusted_needed: bool) -> None:
        self.proc = await spawn(self.argv)
        if self.nice:
            # Background work (the metadata warm-up): yields the CPU to the pool's workers. Set
            # while cv is still booting; through a context only the local client is reniced.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, self.nice)
            _lower_group(self.proc.pid, self.nice)
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        await self._read_handshake(trusted_needed)
        wanted = {"apiError": "array", "bufferSize": buffer_size, "responsePrefix": PREFIX}
        try:
            result = await self.rpc("options", wanted, bounded=False)
        except RpcError as exc:
            raise GatewayError(
                "upstream-invalid-response", f"cv pipe refused the gateway's options: {exc.message}"
            ) from None
        if not isinstance(result, dict) or result.get("apiError") != "array":
            raise GatewayError(
                "upstream-invalid-response",
                f"cv pipe did not accept apiError=array (answered {result!r:.200}).",
            )
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
            pid_line = _PID_LINE.match(text) if self.kill_argv and self.remote_pid is None else None
            if pid_line:
                self.remote_pid = int(pid_line.group(1))
                continue
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                log.warning("cv pipe printed before its handshake: %.200s", text.decode("utf-8", "replace"))
                continue
            if not (isinstance(message, dict) and "Civi::pipe" in message):
                log.warning(
                    "cv pipe's first line is not a Civi::pipe handshake: %.300s",
                    text.decode("utf-8", "replace"),
                )
                raise GatewayError(
                    "upstream-invalid-response",
                    "cv pipe's first line is not a Civi::pipe handshake; see the gateway's log.",
                )
            flags = message["Civi::pipe"]
            self.handshake = flags if isinstance(flags, dict) else {"flags": flags}
            if trusted_needed and isinstance(flags, dict) and flags.get("t") != "trusted":
                raise GatewayError(
                    "gateway-misconfigured",
                    "cv pipe opened an untrusted session; the gateway needs a trusted one to log "
                    "in as cv_user or to turn permission checks off.",
                )
            return

    async def _start_failure(self) -> GatewayError:
        """Why the worker ended before its handshake, classified like a failed ``cv`` run:
        a context that cannot reach cv (container stopped, host down) is 503, cv's own boot
        failures keep CiviCRM's message. stderr itself only goes to the log."""
        assert self.proc is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 2)
        code = self.proc.returncode if self.proc.returncode is not None else -1
        return failure_from_stderr(ProcessResult(code, b"", bytes(self._stderr)), what="cv pipe")

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

    async def kill(self, *, remote: bool = False) -> None:
        """SIGKILL the worker's group and reap it; ``remote``: through a context, kill cv
        there too. Only for a cv known to be running there (hung, or deaf to EOF): one that
        ended by itself may have had its pid reused."""
        self._dead = True
        if self.proc is None:
            return
        kill_group(self.proc)
        await reap(self.proc)
        await self._close_pipes()
        if remote and self.remote_pid is not None and self.kill_argv:
            await self._kill_remote(self.remote_pid)

    async def _kill_remote(self, pid: int) -> None:
        argv = [*(self.kill_argv or []), str(pid)]
        try:
            result = await run_process(argv, b"", 15)
        except GatewayError as exc:
            log.warning(
                "could not kill cv pipe worker %d (pid %d where it runs): %s", self.number, pid, exc.detail
            )
            return
        if result.returncode != 0:
            log.info(
                "killing cv pipe worker %d where it runs (pid %d) exited with %d: %s",
                self.number,
                pid,
                result.returncode,
                result.stderr.decode("utf-8", "replace").strip()[:300],
            )
        else:
            log.info("cv pipe worker %d killed where it runs (pid %d)", self.number, pid)

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
        await self.kill(remote=self.proc.returncode is None)

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
                del self._buf[: index + 1]
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
        request_id = next(self._request_ids)
        message = await self._exchange(
            {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}, bounded
        )
        return self._result(message, request_id)

    async def rpc_batch(self, calls: list[tuple[str, Any]]) -> list[Any]:
        """Several requests in one line (a JSON-RPC batch), answered in one line: each item
        is its result, or the RpcError it raised."""
        ids = [next(self._request_ids) for _ in calls]
        requests = [
            {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
            for (method, params), request_id in zip(calls, ids, strict=True)
        ]
        answer = await self._exchange(requests, True)
        if not isinstance(answer, list) or len(answer) != len(ids):
            raise self._broken(f"cv pipe worker answered a batch of {len(ids)} with {str(answer)[:200]!r}")
        by_id = {m.get("id"): m for m in answer if isinstance(m, dict)}
        results: list[Any] = []
        for request_id in ids:
            try:
                results.append(self._result(by_id.get(request_id), request_id))
            except RpcError as exc:
                results.append(exc)
        return results

    async def _exchange(self, request: Any, bounded: bool) -> Any:
        """Write one request line, read the one response line (noise skipped), decoded."""
        assert self.proc is not None and self.proc.stdin is not None
        line = orjson.dumps(request, option=orjson.OPT_APPEND_NEWLINE)
        if bounded and len(line) > self.buffer_size:
            raise GatewayError(
                "payload-too-large",
                f"The call's params are {len(line) - 1} bytes as JSON; cv pipe "
                f"reads requests of less than {self.buffer_size} bytes.",
            )
        try:
            self.proc.stdin.write(line)
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
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                raise self._broken("cv pipe worker answered a line that is not JSON.") from None

    def _result(self, message: Any, request_id: int) -> Any:
        if not isinstance(message, dict) or message.get("id") != request_id:
            raise self._broken(
                f"cv pipe worker answered out of turn (expected id {request_id}): {str(message)[:200]!r}"
            )
        if "error" in message:
            error = message["error"] if isinstance(message["error"], dict) else {}
            raise RpcError(error.get("code"), str(error.get("message") or ""), error.get("data"))
        if "result" not in message:
            raise self._broken("cv pipe worker answered without result or error.")
        return message["result"]

    def _response_text(self, raw: bytes) -> bytes | None:
        """The response in one stdout line, or None for noise (logged and skipped)."""
        marker = self.prefix if self.prefix is not None else PREFIX.encode()
        at = raw.find(marker)
        if at >= 0:  # a prefixed response, perhaps glued to a notice without its newline
            return raw[at + len(marker) :]
        text = raw.strip()
        if not text:
            return None
        if self.prefix is None and not _PHP_NOISE.search(text):
            return text
        log.warning("cv pipe worker %d printed noise: %.200s", self.number, text.decode("utf-8", "replace"))
        return None

    def _broken(self, detail: str) -> WorkerBroken:
        self._dead = True
        tail = self.stderr_tail()
        log.warning(
            "%s (worker %d, pid %s)%s", detail, self.number, self.pid, f"; stderr: {tail}" if tail else ""
        )
        return WorkerBroken(GatewayError("upstream-invalid-response", detail))


__all__ = [
    "DEFAULT_BUFFER",
    "KILL_PID",
    "PREFIX",
    "REPORT_PID",
    "Login",
    "PipeWorker",
    "RpcError",
    "WorkerBroken",
]
