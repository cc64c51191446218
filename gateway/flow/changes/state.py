"""What a feed keeps between polls: one abstraction, two stores (SQLite, Redis).

Per feed (lineage): its query and mode, a counter numbering the changes it reports, the
``(id, version)`` pairs it reported lately (so the overlap window re-reads without reporting
twice), the ids it knows (to see deletions; with a hash of the selected fields in a snapshot
feed) and the deletions found, numbered once reported. Nothing else: no field values.

SQLite (``changes.sqlite`` in the state folder) serves one host's workers; Redis serves
replicas, so a cursor one replica issued resumes on any other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lineage:
    id: str
    client: str
    entity: str
    mode: str  # "modified" (keyset on modified_date) or "snapshot"
    query: str  # the feed's select and where, as JSON
    tracked: bool  # deletions are looked for
    scanned_at: float


class FeedState(ABC):
    @abstractmethod
    async def create(
        self, lineage: str, client: str, entity: str, mode: str, query: str, tracked: bool
    ) -> None: ...

    @abstractmethod
    async def lineage(self, lineage: str) -> Lineage | None:
        """The feed, marked as used now; None when it is not kept (any more)."""

    @abstractmethod
    async def numbers(self, lineage: str, count: int) -> int:
        """``count`` new change numbers for the feed (atomically): the first of them."""

    @abstractmethod
    async def seen(
        self, lineage: str, versions: Iterable[tuple[int, str]], upto: int
    ) -> set[tuple[int, str]]:
        """Which of these versions were reported with a number the holder has received."""

    @abstractmethod
    async def reported(
        self, lineage: str, versions: Iterable[tuple[int, str, int]], forget_before: str
    ) -> None:
        """Versions reported with their numbers; those older than ``forget_before`` forgotten."""

    @abstractmethod
    async def known(self, lineage: str) -> dict[int, str]: ...

    @abstractmethod
    async def know(self, lineage: str, items: Iterable[tuple[int, str]]) -> None: ...

    @abstractmethod
    async def gone(self, lineage: str, ids: Iterable[int]) -> None:
        """These ids are no longer listed: forgotten, and a deletion to report."""

    @abstractmethod
    async def deletions(self, lineage: str, after: int, limit: int) -> list[int]:
        """Deletions the holder of change number ``after`` has not received, oldest first."""

    @abstractmethod
    async def number_deletions(self, lineage: str, numbered: Iterable[tuple[int, int]]) -> None: ...

    @abstractmethod
    async def forget_unused(self, days: float) -> int:
        """Feeds unused for ``days``, with everything they kept."""

    async def close(self) -> None:
        """Free connections and files."""


def make_feed_state(kind: str, *, redis_url: str, sqlite_path: Path) -> FeedState:
    """The feed state ``kind`` names (sqlite or redis)."""
    if kind == "redis":
        from gateway.flow.changes.redis_state import RedisFeedState

        return RedisFeedState(redis_url)
    from gateway.flow.changes.sqlite_state import SqliteFeedState

    return SqliteFeedState(sqlite_path)
