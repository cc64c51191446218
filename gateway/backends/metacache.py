"""A TTL cache for CiviCRM's metadata calls (getFields, getActions, Entity.get).

Clients and tools (the OpenAPI builder, form generators) ask for the same metadata over and
over, and it changes only when an admin edits custom fields or option lists. Entries are keyed by
the full call and by the identity it ran as, because CiviCRM filters metadata by permission.
Concurrent misses for one key share a single upstream call.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import orjson

from gateway.core.call import Call
from gateway.core.identity import Identity
from gateway.core.results import Records

# Writes to these entities can change what getFields/getActions answer: they flush the cache.
METADATA_ENTITIES = frozenset(
    {"CustomField", "CustomGroup", "OptionGroup", "OptionValue", "Entity", "Extension", "Setting"}
)


def _identity_key(identity: Identity | None) -> str:
    if identity is None:
        return ""
    # Hashed so that a heap dump of the cache keys shows no API key.
    raw = f"{identity.api_key or ''}\0{identity.cv_user or ''}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _retrieve(task: asyncio.Task[Records]) -> None:
    """Mark a failed load's error as seen even if every waiting caller went away."""
    if not task.cancelled():
        task.exception()


class MetadataCache:
    """LRU + TTL map from a call to its records; ``ttl == 0`` disables it."""

    def __init__(
        self, ttl: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Records]] = OrderedDict()
        self._loading: dict[bytes, asyncio.Task[Records]] = {}
        self._generation = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    @property
    def generation(self) -> int:
        """Bumped by every flush: holders of derived metadata know to drop it."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(call: Call, identity: Identity | None) -> bytes:
        """The call as CiviCRM receives it (its params from the parse: two spellings of one
        call share an entry) and who it runs as."""
        return orjson.dumps(
            [call.version, call.entity, call.action, call.to_params(), _identity_key(identity)],
            option=orjson.OPT_SORT_KEYS,
        )

    async def get_or_load(
        self,
        key: bytes,
        load: Callable[[], Awaitable[Records]],
        on_result: Callable[[str], None] | None = None,
    ) -> Records:
        """The cached records for ``key``, or ``load()``'s (stored only when it succeeds)."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            self._entries.move_to_end(key)
            self.hits += 1
            if on_result:
                on_result("hit")
            return Records(entry[1], count_matched=entry[1].count_matched)
        self.misses += 1
        if on_result:
            on_result("miss")
        task = self._loading.get(key)
        if task is None:
            # A task of its own: a caller that goes away does not cancel the others' load.
            task = asyncio.ensure_future(self._load(key, load, self._generation))
            task.add_done_callback(_retrieve)
            self._loading[key] = task
        records = await asyncio.shield(task)
        return Records(records, count_matched=records.count_matched)

    async def _load(self, key: bytes, load: Callable[[], Awaitable[Records]], generation: int) -> Records:
        try:
            records = await load()
            if generation == self._generation:  # not flushed meanwhile
                self._entries[key] = (self._clock() + self.ttl, records)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return records
        finally:
            self._loading.pop(key, None)

    def flush(self) -> int:
        """Forget everything; returns how many entries were dropped."""
        dropped = len(self._entries)
        self._entries.clear()
        self._generation += 1
        return dropped
