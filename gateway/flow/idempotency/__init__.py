"""``Idempotency-Key``: a write sent again with the same key runs at most once per client.

The first request with a key claims it (atomically, in the configured store) and runs; its
answer is stored and every repeat with the same fingerprint gets it back byte for byte, with
``Idempotent-Replayed: true``. A repeat while the first runs gets 409 with Retry-After; the
same key with another call, 422. A failure before CiviCRM was reached (rate limit, CiviCRM
unreachable, the gateway's own refusals) releases the key: the client may simply retry. When
the outcome is unknown (CiviCRM did not answer in time, the connection broke after the
request was sent) the answer is ``write-outcome-unknown`` (504), stored like any other, so
the write is never sent twice.

Reads are not concerned: the header is ignored on them. The key is scoped to the client, so
one client can neither replay nor probe another's keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from gateway.backends.base import TransientError
from gateway.core.call import Call
from gateway.core.errors import GatewayError, invalid_request
from gateway.flow.clients import Client
from gateway.flow.idempotency.store import Answer as Stored
from gateway.flow.idempotency.store import Entry, MemoryStore, Store
from gateway.flow.outcome import Answer, problem_answer

log = logging.getLogger("gateway.flow.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
# Headers of the first answer that are not replayed: the body's own and per-request ones.
_NOT_STORED = frozenset({"content-length", "content-type", "x-request-id"})


def make_store(kind: str, *, redis_url: str, sqlite_path: Path) -> Store:
    """The store ``kind`` names (memory, sqlite or redis)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "redis":
        from gateway.flow.idempotency.redis_store import RedisStore

        return RedisStore(redis_url)
    from gateway.flow.idempotency.sqlite_store import SqliteStore

    return SqliteStore(sqlite_path)


def fingerprint(parts: Iterable[Any]) -> str:
    """A digest of what the call does (canonical params: two spellings of one call match)."""
    data = orjson.dumps(list(parts), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(data).hexdigest()


def call_parts(call: Call) -> tuple[Any, ...]:
    """A prepared :class:`gateway.core.call.Call` as fingerprint material."""
    return (call.version, call.entity, call.action, call.to_params())


def outcome_of(exc: BaseException) -> str:
    """``release`` (CiviCRM did not run the call), ``unknown`` (it may have) or ``store``
    (CiviCRM answered: its refusal is the call's answer)."""
    if isinstance(exc, TransientError) and not exc.reached:
        return "release"
    if isinstance(exc, GatewayError):
        ran = exc.problem.ran
        return "release" if ran == "never" else "unknown" if ran == "maybe" else "store"
    return "unknown"  # a bug or a cancellation midway: the write may have been sent


def _unknown_error(cause: str) -> GatewayError:
    return GatewayError(
        "write-outcome-unknown",
        f"{cause} The write was sent to CiviCRM but its answer was lost, so it may or may "
        "not have happened. This key will not run it again: read the record back (by a field "
        "your client set, such as external_identifier) or look it up in the gateway's audit "
        "trail, and if it is missing send the write again with a new Idempotency-Key.",
    )


class Idempotency:
    """The claim-run-store cycle around one write, over a :class:`Store`."""

    def __init__(self, open_store: Callable[[], Store], *, ttl: float, lease: float) -> None:
        """``open_store``: called on first use, so a gateway without keys touches no file."""
        self._open_store = open_store
        self._store: Store | None = None
        self.ttl = ttl
        self.lease = lease

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()

    async def run(
        self,
        client: Client,
        key: str | None,
        *,
        writes: bool,
        parts: Callable[[], Iterable[Any]],
        answer: Callable[[], Awaitable[Answer]],
        instance: str,
    ) -> Answer:
        """``answer()`` at most once per (client, key) for a write; reads pass through.
        ``instance``: where the call was sent (a stored problem names it)."""
        key = key if writes else None
        if key is None:
            if writes and client.policy.require_idempotency_key:
                raise GatewayError(
                    "idempotency-key-required",
                    f"This client must send an {HEADER} header with every write "
                    "(1-255 printable ASCII characters, unique per write).",
                )
            return await answer()
        if not _KEY.fullmatch(key):
            raise invalid_request(f"{HEADER} must be 1 to 255 printable ASCII characters.")
        scope = hashlib.sha256(f"{client.name}\0{key}".encode()).hexdigest()
        mine = fingerprint(parts())
        owner = secrets.token_hex(16)
        now = time.time()
        claim = Entry(mine, owner, now + self.lease, now + self.ttl)
        try:
            found = await self.store.claim(scope, claim)
        except Exception as exc:
            # Without a claim the write could run twice: refuse it, it never reached CiviCRM.
            log.error("the idempotency store cannot claim a key", exc_info=exc)
            raise GatewayError(
                "idempotency-store-unavailable",
                "The gateway cannot reach its Idempotency-Key store, so it cannot "
                "promise this write runs once; it was not sent. Retry later with "
                "the same key.",
                headers={"Retry-After": "5"},
            ) from None
        if found is not None:
            return await self._repeat(scope, found, mine, instance)
        try:
            result = await answer()
        except BaseException as exc:
            outcome = outcome_of(exc)
            error = (
                None
                if outcome == "release"
                else (
                    exc
                    if outcome == "store" and isinstance(exc, GatewayError)
                    else _unknown_error(
                        exc.detail
                        if isinstance(exc, GatewayError)
                        else "The gateway failed while the write was in flight."
                    )
                )
            )
            await asyncio.shield(self._record(scope, claim, error, instance))
            if error is None or error is exc or not isinstance(exc, Exception):
                raise  # a cancellation goes on as one
            if not isinstance(exc, GatewayError):
                log.error("unexpected failure during an idempotent write", exc_info=exc)
            raise error from None
        if result.body is None:  # a streamed answer (never a write's): nothing to replay
            await self.store.release(scope, owner)
            return result
        try:
            await self.store.finish(scope, owner, claim.finished(_stored(result), time.time() + self.ttl))
        except Exception:
            # The write is done: answer it. The key stays in flight until its lease ends,
            # then answers write-outcome-unknown; it never runs the write again.
            log.exception("could not store the answer of an idempotent write")
        return result

    async def _record(self, scope: str, claim: Entry, error: GatewayError | None, instance: str) -> None:
        """After a failure: release the key, or store the problem as the key's answer."""
        try:
            if error is None:
                await self.store.release(scope, claim.owner)
                return
            await self.store.finish(
                scope,
                claim.owner,
                claim.finished(_stored(problem_answer(error, instance)), time.time() + self.ttl),
            )
        except Exception:
            # The key stays in flight until its lease ends, then answers write-outcome-unknown.
            log.exception("could not record the outcome of an idempotent write")

    async def _repeat(self, scope: str, found: Entry, mine: str, instance: str) -> Answer:
        if found.fingerprint != mine:
            raise GatewayError(
                "idempotency-key-reused",
                f"This {HEADER} was used with another call (other entity, "
                "action or params): use a new key for a new write.",
            )
        if found.answer is None:
            if found.lease_until > time.time():
                raise GatewayError(
                    "idempotency-key-in-flight",
                    f"A request with this {HEADER} is still running: retry "
                    "after Retry-After seconds to get its answer.",
                    headers={"Retry-After": "1"},
                )
            # Its lease ran out: the process running it stopped midway. It may have written.
            answer = _stored(
                problem_answer(
                    _unknown_error("The request that first sent this key stopped without an answer."),
                    instance,
                )
            )
            await self.store.finish(scope, found.owner, found.finished(answer, time.time() + self.ttl))
            found = found.finished(answer, 0.0)
        assert found.answer is not None
        stored = found.answer
        return Answer(
            stored.status,
            stored.body,
            media_type=stored.content_type,
            headers={**dict(stored.headers), REPLAYED: "true"},
            replayed=True,
        )


def _stored(answer: Answer) -> Stored:
    """An answer as kept for replay: byte for byte, less the per-request headers."""
    assert answer.body is not None
    kept = tuple((k, v) for k, v in answer.headers.items() if k.lower() not in _NOT_STORED)
    return Stored(answer.status, answer.media_type, kept, bytes(answer.body))
