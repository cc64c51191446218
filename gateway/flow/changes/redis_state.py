"""Feed state in Redis, shared by replicas (``state.FeedState``): a cursor one replica issued
resumes on any other, and change numbers come from one counter (``HINCRBY``), so two
replicas answering the same feed never give two changes one number.

Keys, under ``civicrm-gateway:changes:``: ``lineage:{id}`` (a hash: the feed's query, mode
and counter), ``lineages`` (feeds by last use), and per feed ``seen:{id}`` (a hash from
``version#id`` to the number it was reported with) with ``seenby:{id}`` (the same names in a
sorted set, to forget by date), ``known:{id}`` (id to hash), ``tomb:{id}`` (deleted id to its
number, "" until reported) with ``tombby:{id}`` (deleted ids by when they were found). Several
keys change in one Lua script where they must change together. One Redis (or a Sentinel
pair), not Redis Cluster: scripts name keys they build.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any

from gateway.flow.changes.state import FeedState, Lineage

PREFIX = "civicrm-gateway:changes:"
_KEY = PREFIX + "cursor-key"

# Versions reported (ARGV: forget_before, then name, seq pairs); then the older forgotten.
_REPORTED = """
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], 0, ARGV[i])
end
local old = redis.call('ZRANGEBYLEX', KEYS[2], '-', '(' .. ARGV[1])
for _, name in ipairs(old) do
  redis.call('HDEL', KEYS[1], name)
end
if #old > 0 then
  redis.call('ZREMRANGEBYLEX', KEYS[2], '-', '(' .. ARGV[1])
end
return #old
"""
# Ids gone (ARGV: now, then ids): no longer known, a deletion to report (once), scanned now.
_GONE = """
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  if redis.call('HSETNX', KEYS[2], ARGV[i], '') == 1 then
    redis.call('ZADD', KEYS[3], ARGV[1], string.format('%020d', tonumber(ARGV[i])))
  end
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'scanned_at', ARGV[1])
end
return 1
"""


def _seen_name(id_: int, version: str) -> str:
    """Sorted by version first (it starts with the date), as SQLite compares ``modified``."""
    return f"{version}#{id_}"


class RedisFeedState(FeedState):
    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis  # the 'redis' extra

        self._redis: Any = Redis.from_url(url.removeprefix("async+"), decode_responses=True)
        self._reported = self._redis.register_script(_REPORTED)
        self._gone = self._redis.register_script(_GONE)

    async def close(self) -> None:
        await self._redis.aclose()

    async def create(
        self, lineage: str, client: str, entity: str, mode: str, query: str, tracked: bool
    ) -> None:
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                PREFIX + "lineage:" + lineage,
                mapping={
                    "client": client,
                    "entity": entity,
                    "mode": mode,
                    "query": query,
                    "next_seq": 1,
                    "tracked": int(tracked),
                    "scanned_at": now,
                },
            )
            pipe.zadd(PREFIX + "lineages", {lineage: now})
            await pipe.execute()

    async def lineage(self, lineage: str) -> Lineage | None:
        row = await self._redis.hgetall(PREFIX + "lineage:" + lineage)
        if not row or "mode" not in row:
            return None
        await self._redis.zadd(PREFIX + "lineages", {lineage: time.time()}, xx=True)
        return Lineage(
            lineage,
            row["client"],
            row["entity"],
            row["mode"],
            row["query"],
            row["tracked"] == "1",
            float(row["scanned_at"]),
        )

    async def numbers(self, lineage: str, count: int) -> int:
        after = await self._redis.hincrby(PREFIX + "lineage:" + lineage, "next_seq", count)
        return int(after) - count

    async def seen(
        self, lineage: str, versions: Iterable[tuple[int, str]], upto: int
    ) -> set[tuple[int, str]]:
        pairs = list(versions)
        if not pairs:
            return set()
        found = await self._redis.hmget(PREFIX + "seen:" + lineage, [_seen_name(i, v) for i, v in pairs])
        return {pair for pair, seq in zip(pairs, found, strict=True) if seq is not None and int(seq) <= upto}

    async def reported(
        self, lineage: str, versions: Iterable[tuple[int, str, int]], forget_before: str
    ) -> None:
        args: list[Any] = [forget_before]
        for id_, version, seq in versions:
            args += [_seen_name(id_, version), seq]
        await self._reported(keys=[PREFIX + "seen:" + lineage, PREFIX + "seenby:" + lineage], args=args)

    async def known(self, lineage: str) -> dict[int, str]:
        return {int(k): v for k, v in (await self._redis.hgetall(PREFIX + "known:" + lineage)).items()}

    async def know(self, lineage: str, items: Iterable[tuple[int, str]]) -> None:
        mapping = {str(i): h for i, h in items}
        for start in range(0, len(mapping), 10_000):  # bounded commands for large feeds
            chunk = dict(list(mapping.items())[start : start + 10_000])
            await self._redis.hset(PREFIX + "known:" + lineage, mapping=chunk)

    async def gone(self, lineage: str, ids: Iterable[int]) -> None:
        keys = [PREFIX + f"{name}:{lineage}" for name in ("known", "tomb", "tombby", "lineage")]
        await self._gone(keys=keys, args=[time.time(), *ids])

    async def deletions(self, lineage: str, after: int, limit: int) -> list[int]:
        ordered = await self._redis.zrange(PREFIX + "tombby:" + lineage, 0, -1)
        if not ordered:
            return []
        ids = [int(m) for m in ordered]
        numbers = await self._redis.hmget(PREFIX + "tomb:" + lineage, [str(i) for i in ids])
        out = [
            i
            for i, seq in zip(ids, numbers, strict=True)
            if seq is not None and (seq == "" or int(seq) > after)
        ]
        return out[:limit]

    async def number_deletions(self, lineage: str, numbered: Iterable[tuple[int, int]]) -> None:
        mapping = {str(i): s for i, s in numbered}
        if mapping:
            await self._redis.hset(PREFIX + "tomb:" + lineage, mapping=mapping)

    async def forget_unused(self, days: float) -> int:
        ids = await self._redis.zrangebyscore(PREFIX + "lineages", "-inf", time.time() - days * 86_400)
        for lineage in ids:
            names = ("lineage", "seen", "seenby", "known", "tomb", "tombby")
            await self._redis.delete(*(PREFIX + f"{name}:{lineage}" for name in names))
            await self._redis.zrem(PREFIX + "lineages", lineage)
        return len(ids)


def shared_cursor_key(url: str) -> bytes:
    """The cursor signing key every replica uses: made once, kept in Redis.

    Read once per process, when the first cursor is signed or checked (the codec asks for
    it synchronously): one short blocking round trip, then kept in memory."""
    from redis import Redis

    client: Any = Redis.from_url(url.removeprefix("async+"), socket_timeout=10)
    try:
        client.set(_KEY, secrets.token_hex(32), nx=True)
        found = client.get(_KEY)
    finally:
        client.close()
    assert found is not None
    return bytes.fromhex(found.decode())
