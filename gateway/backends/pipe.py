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

One request at a time per worker; callers wait for a free worker (at most ``cv_timeout``,
first come, first served). A worker that dies, hangs past ``cv_timeout`` or breaks the protocol
is killed (whole group; a hung one through a context also where cv runs) and replaced in the
background. Its in-flight call is answered 504 when it hung; when the worker died or broke the
protocol, a read is sent once more on another worker (within the retry budget) and a write is
answered 502, never repeated. After ``pipe_max_calls`` calls a worker is retired and replaced.
``close`` ends them all.

A ``get`` selecting ``row_count`` sends its records query and a count query
(``gateway.backends.rowcount``) as one JSON-RPC batch line: one round trip, one session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.backends import rowcount
from gateway.backends.base import Backend
from gateway.backends.config import CvConfig
from gateway.backends.cv import with_permissions
from gateway.backends.cvproc import (
    check_names,
    check_user,
    command_prefix,
    timeout_error,
    v3_result,
    v4_result,
)
from gateway.backends.pipeworker import (
    DEFAULT_BUFFER,
    KILL_PID,
    REPORT_PID,
    Login,
    LoginRefused,
    PipeWorker,
    RpcError,
    WorkerBroken,
    WorkerDied,
    rpc_failure,
)
from gateway.core.call import Call
from gateway.core.errors import GatewayError
from gateway.core.results import Records

if TYPE_CHECKING:
    from gateway.core.identity import Identity

log = logging.getLogger("gateway.pipe")


@dataclass
class _Slot:
    number: int
    worker: PipeWorker | None = None


class IdleSlots:
    """Free slots, handed to waiting callers first come, first served.

    asyncio.Queue lets a caller that arrives while a freed slot is on its way to the first
    waiter take it instead; under a steady load such a waiter can wait until its deadline
    (a write queued behind busy readers got 504 in tests). Here a freed slot goes straight to
    the oldest waiter, and a newcomer waits its turn."""

    def __init__(self) -> None:
        self._free: collections.deque[_Slot] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Slot]] = collections.deque()

    def __len__(self) -> int:
        return len(self._free)

    def __contains__(self, slot: object) -> bool:
        return slot in self._free

    def put(self, slot: _Slot) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)

    async def get(self, limit: float) -> _Slot:
        """A free slot within ``limit`` seconds (TimeoutError otherwise)."""
        if self._free and not self._waiters:  # no waiter task, no timer (~40 us a call)
            return self._free.popleft()
        waiter: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(limit):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.put(waiter.result())  # handed over just as we gave up: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise


class PipeBackend(Backend):
    name = "pipe"

    def __init__(self, config: CvConfig, *, nice: int = 0) -> None:
        self.config = config
        self.nice = nice  # > 0: workers at a lower CPU priority (gateway.backends.warmup)
        prefix = [*command_prefix(config), "pipe", "vtl"]
        context = config.cv_context
        self.context = bool(context)
        self.kill_argv: list[str] | None = None
        if context and config.cv_context_kill:
            # Learn cv's pid where it runs, to kill it there (see gateway.backends.pipeworker).
            cv = prefix[len(context) :]
            prefix = [*context, "sh", "-c", REPORT_PID, "cv-pipe", *cv]
            self.kill_argv = [*context, "sh", "-c", KILL_PID, "cv-pipe-kill"]
        self.argv = prefix
        self.size = config.pipe_size
        # Requests up to the gateway's body limit (plus JSON-RPC framing) must fit in a line.
        self.buffer_size = max(DEFAULT_BUFFER, 2 * config.max_body_bytes + 65_536)
        self._idle = IdleSlots()
        self._slots: list[_Slot] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: set[PipeWorker] = set()
        self._closed = False
        self._queued = 0
        self.started_workers = 0
        self.restarts = 0  # workers replaced after dying, hanging or breaking the protocol
        self.recycled = 0  # workers retired after pipe_max_calls calls (or a failed login)
        self.calls = 0
        self.retried = 0  # reads sent again on another worker after theirs died
        # Checked once: asked for on every call without a client identity.
        self._default_login = Login("user", check_user(config.cv_user)) if config.cv_user else None

    def stats(self) -> dict[str, float]:
        """Pool use for /metrics: size, busy and idle workers, queued callers, replacements."""
        idle = len(self._idle) if not self._closed else 0
        size = len(self._slots) if not self._closed else 0
        return {
            "size": size,
            "busy": size - idle,
            "idle": idle,
            "queued": self._queued,
            "restarts": self.restarts,
            "recycled": self.recycled,
            "calls": self.calls,
            "retried": self.retried,
        }

    def workers(self, *, busy: bool | None = None) -> list[PipeWorker]:
        """The pool's live workers (only the busy or only the idle ones when ``busy`` says):
        for diagnostics and the fault tests, which kill one and watch the pool heal."""
        return [
            slot.worker
            for slot in self._slots
            if slot.worker is not None
            and slot.worker.alive
            and (busy is None or busy == (slot not in self._idle))
        ]

    # --- pool ------------------------------------------------------------------------------
    @property
    def _trusted_needed(self) -> bool:
        return bool(self.config.cv_user) or not self.config.cv_check_permissions

    def default_login(self) -> Login | None:
        return self._default_login

    async def _spawn(self) -> PipeWorker:
        if self._closed:
            raise GatewayError("upstream-unavailable", "The gateway is shutting down.")
        worker = PipeWorker(self.argv, self.kill_argv, nice=self.nice)
        self._workers.add(worker)
        self.started_workers += 1
        try:
            async with asyncio.timeout(self.config.pipe_start_timeout):
                await worker.start(buffer_size=self.buffer_size, trusted_needed=self._trusted_needed)
                await self._login(worker, self.default_login())
        except TimeoutError:
            await self._discard(worker)
            tail = worker.stderr_tail(300)
            if tail:
                log.warning("cv pipe worker %d did not start; stderr: %s", worker.number, tail)
            raise GatewayError(
                "upstream-timeout",
                f"cv pipe did not complete its handshake within "
                f"{self.config.pipe_start_timeout:g} s" + ("; see the gateway's log." if tail else "."),
            ) from None
        except (WorkerBroken, LoginRefused) as exc:
            await self._discard(worker)
            raise exc.error from None
        except BaseException:
            await self._discard(worker)
            raise
        log.info("cv pipe worker %d ready (pid %s, %s)", worker.number, worker.pid, worker.handshake)
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
            raise LoginRefused(
                GatewayError(
                    "gateway-misconfigured",
                    f"cv pipe could not log in as {who}: {exc.message}",
                    civicrm={"error_code": exc.code, "error_message": exc.message},
                )
            ) from None
        if not isinstance(result, dict) or not result.get("contactId"):
            raise LoginRefused(
                GatewayError("gateway-misconfigured", f"cv pipe's login answered no contact: {result!r:.200}")
            )
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
            self._idle.put(slot)

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
                    self._idle.put(slot)

        task = asyncio.create_task(refill())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retire(self, slot: _Slot, *, kill: bool, hung: bool = False) -> None:
        """Take the slot's worker out of service: killed now (broken or hung), or ended
        politely in the background (recycled); a replacement is started in the background."""
        worker, slot.worker = slot.worker, None
        if worker is not None:
            self._workers.discard(worker)
            if kill:
                self.restarts += 1
                await worker.kill(remote=hung)
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
            return await self._idle.get(limit)
        except TimeoutError:
            raise GatewayError(
                "upstream-timeout",
                f"No cv pipe worker became free within {limit:g} s ({self.size} workers, all busy).",
            ) from None
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
                log.warning(
                    "cv pipe worker %d (pid %s) died while idle; replacing it", worker.number, worker.pid
                )
                self.restarts += 1
            self._workers.discard(worker)
            await worker.stop(grace=0.5)
            slot.worker = None
        slot.worker = await self._spawn()
        return slot.worker

    async def call(self, call: Call, *, identity: Identity | None = None) -> Records:
        version, entity, action = call.version, call.entity, call.action
        check_names(entity, action)
        if version not in (3, 4):
            raise GatewayError("invalid-request", f"Unknown API version {version}.")
        if self._closed or not self._slots:
            raise GatewayError("upstream-unavailable", "The cv pipe pool is not running.")
        login = self._login_for(identity)
        method = f"api{version}"
        count_plan = rowcount.plan(call)
        if count_plan is None:
            calls = [(method, [entity, action, with_permissions(self.config, version, call.to_params())])]
        else:
            calls = [
                (method, [entity, action, with_permissions(self.config, version, q)])
                for q in (count_plan.records, count_plan.count)
                if q is not None
            ]
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.config.cv_timeout
        try:
            answers = await self._call_once(calls, login, entity, action, deadline)
        except WorkerDied as exc:
            # A read is safe to send again, on another worker: the dead one's slot is being
            # refilled, so the next free slot holds a different process. Once, and only
            # before the call's own deadline; a write is never repeated. (A worker that died
            # because its container went away is only told apart by starting another: the
            # retry then answers 503, as a cv run would.)
            if not (call.reads_only and self.config.retry_max_attempts > 1 and loop.time() < deadline):
                raise GatewayError(
                    exc.slug,
                    exc.detail + " The call was not repeated: a "
                    "write may have been committed (check before repeating "
                    "it).",
                ) from None
            self.retried += 1
            log.info(
                "cv pipe: retrying a read (%s.%s) on another worker after: %s", entity, action, exc.detail
            )
            try:
                answers = await self._call_once(calls, login, entity, action, deadline)
            except WorkerDied as again:
                raise GatewayError(
                    again.slug, again.detail + " (The read was tried on two workers.)"
                ) from None
        self.calls += 1
        for answer in answers:
            if isinstance(answer, RpcError):  # a batch member CiviCRM refused
                raise rpc_failure(answer)
        records = [self._records(version, action, answer) for answer in answers]
        if count_plan is None:
            return records[0]
        return rowcount.combine(
            count_plan, records[0] if count_plan.records is not None else None, records[-1]
        )

    async def _call_once(
        self, calls: list[tuple[str, Any]], login: Login | None, entity: str, action: str, deadline: float
    ) -> list[Any]:
        """One attempt on one worker: its answers (RpcError items for refused batch members).
        WorkerDied when the worker died or broke the protocol mid-call."""
        timeout = self.config.cv_timeout
        slot = await self._acquire(max(0.0, deadline - asyncio.get_running_loop().time()))
        # What to do with the worker afterwards: keep, recycle, kill, or kill also where it
        # runs (hung: only then is cv known to be still running there).
        outcome = "kill"
        try:
            worker = await self._ready_worker(slot, login)
            try:
                async with asyncio.timeout_at(deadline):
                    await self._login(worker, login)
                    if len(calls) == 1:
                        answers = [await worker.rpc(*calls[0])]
                    else:
                        answers = await worker.rpc_batch(calls)
            except TimeoutError:
                outcome = "hung"
                log.warning(
                    "cv pipe worker %d (pid %s) hung on %s.%s; killing it",
                    worker.number,
                    worker.pid,
                    entity,
                    action,
                )
                remote = None if not self.context else worker.remote_pid is not None
                raise timeout_error("cv pipe", timeout, remote=remote) from None
            except WorkerBroken as exc:
                raise WorkerDied(exc.error.slug, exc.error.detail) from None
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
            if (
                outcome == "keep"
                and worker_now is not None
                and worker_now.calls >= self.config.pipe_max_calls
            ):
                log.info("cv pipe worker %d retired after %d calls", worker_now.number, worker_now.calls)
                outcome = "recycle"
            if outcome == "keep" and worker_now is not None:
                self._idle.put(slot)
            else:
                await asyncio.shield(
                    self._retire(slot, kill=outcome in ("kill", "hung"), hung=outcome == "hung")
                )
        return answers

    @staticmethod
    def _records(version: int, action: str, answer: Any) -> Records:
        return v4_result(answer) if version == 4 else v3_result(action, answer)
