"""Where Idempotency-Key entries live: one abstraction, three stores (memory, SQLite, Redis).

An entry is keyed by a digest of (client name, key) and holds the fingerprint of the call that
claimed it, its owner (a random token of the request that runs it), a lease and, once the call
has an outcome, the answer to replay. Every store claims atomically: of two requests racing
for one key, exactly one gets ``None`` from :meth:`Store.claim` and runs.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import orjson


@dataclass(frozen=True, slots=True)
class Answer:
    """A stored answer: replayed byte for byte."""

    status: int
    content_type: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class Entry:
    fingerprint: str
    owner: str
    lease_until: float  # epoch seconds; only meaningful while answer is None (in flight)
    expires_at: float
    answer: Answer | None = None

    @property
    def in_flight(self) -> bool:
        return self.answer is None

    def encode(self) -> bytes:
        """``owner`` (32 hex chars) first, so Redis' Lua can compare it without parsing."""
        head = {"f": self.fingerprint, "l": self.lease_until, "e": self.expires_at}
        if self.answer is not None:
            head.update(s=self.answer.status, c=self.answer.content_type, h=list(self.answer.headers))
        return (
            self.owner.encode()
            + orjson.dumps(head)
            + b"\n"
            + (self.answer.body if self.answer is not None else b"")
        )

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        owner, rest = data[:32].decode(), data[32:]
        line, _, body = rest.partition(b"\n")
        head = orjson.loads(line)
        answer = None
        if "s" in head:
            answer = Answer(head["s"], head["c"], tuple((k, v) for k, v in head["h"]), body)
        return cls(head["f"], owner, head["l"], head["e"], answer)

    def finished(self, answer: Answer, expires_at: float) -> Entry:
        return replace(self, answer=answer, expires_at=expires_at)


class Store(ABC):
    """Atomic claim, then finish (store the answer) or release (forget the claim)."""

    name: str = "store"

    @abstractmethod
    async def claim(self, scope: str, entry: Entry) -> Entry | None:
        """Insert ``entry`` (in flight) unless ``scope`` holds a live entry: ``None`` when
        inserted (the caller runs the call), else the entry found."""

    @abstractmethod
    async def finish(self, scope: str, owner: str, entry: Entry) -> bool:
        """Replace the entry with ``entry`` (which carries an answer) if ``owner`` still owns
        it; False when another owner holds it now."""

    @abstractmethod
    async def release(self, scope: str, owner: str) -> None:
        """Forget the entry if ``owner`` still owns it and it has no answer."""

    async def close(self) -> None:
        """Free connections and files."""


class MemoryStore(Store):
    """One process's dict: for tests and single-worker development (not shared by workers)."""

    name = "memory"

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def _live(self, scope: str) -> Entry | None:
        entry = self._entries.get(scope)
        if entry is not None and entry.expires_at <= time.time():
            del self._entries[scope]
            return None
        return entry

    async def claim(self, scope: str, entry: Entry) -> Entry | None:
        found = self._live(scope)
        if found is not None:
            return found
        if len(self._entries) > 10_000:  # now and then, drop what expired
            now = time.time()
            for name in [k for k, e in self._entries.items() if e.expires_at <= now]:
                del self._entries[name]
        self._entries[scope] = entry
        return None

    async def finish(self, scope: str, owner: str, entry: Entry) -> bool:
        found = self._live(scope)
        if found is None or found.owner != owner:
            return False
        self._entries[scope] = entry
        return True

    async def release(self, scope: str, owner: str) -> None:
        found = self._live(scope)
        if found is not None and found.owner == owner and found.in_flight:
            del self._entries[scope]
