"""Subscriptions, their delivery queue and leases in Redis, shared by replicas
(``store.WebhookStore``).

Keys, under ``civicrm-gateway:webhooks:``: ``subs`` (subscription ids by creation),
``sub:{id}`` (a hash of its fields), ``seq:{id}`` (its delivery counter), ``q:{id}`` (its
pending deliveries by number: the head is the first), ``all:{id}`` (every delivery kept, by
number), ``d:{delivery}`` (a hash of the delivery's fields) and ``lease:{name}`` (the owner's
token, expiring). What must change together changes in one Lua script: queueing checks the
subscription's cursor and moves it with the deliveries it adds; an outcome moves the delivery
in or out of its queue; a lease is taken or renewed only by a free or same owner, and given up
only by its owner. One Redis (or a Sentinel pair), not Redis Cluster: scripts name keys they
build.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.flow.webhooks.store import (
    DELIVERY_FIELDS,
    SUB_FIELDS,
    WebhookStore,
    new_delivery_id,
    new_secret,
    new_subscription_id,
)

PREFIX = "civicrm-gateway:webhooks:"
_INTS = frozenset({"enabled", "seq", "record", "attempts", "last_status"})
_FLOATS = frozenset({"old_until", "failing_since", "created", "next_at", "done_at"})

# KEYS[1] = the hash; ARGV: how many fields to set, then field, value pairs, then fields to
# delete. Only an existing hash changes (a removed subscription is not brought back half-made).
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 2 * n + 2, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
return 1
"""
_ROTATE = """
local current = redis.call('HGET', KEYS[1], 'secret')
if not current then return 0 end
redis.call('HSET', KEYS[1], 'old_secret', current, 'old_until', ARGV[1], 'secret', ARGV[2])
return 1
"""
# KEYS: sub, seq, q, all. ARGV: delivery key prefix, sub id, check (1/0), polled_from, cursor,
# now, then (delivery id, record, type, change cursor) per change.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[3] == '1' and redis.call('HGET', KEYS[1], 'cursor') ~= ARGV[4] then return 0 end
for i = 7, #ARGV, 4 do
  local seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', ARGV[1] .. ARGV[i], 'id', ARGV[i], 'subscription', ARGV[2], 'seq', seq,
    'record', ARGV[i + 1], 'type', ARGV[i + 2], 'change_cursor', ARGV[i + 3],
    'status', 'pending', 'attempts', 0, 'next_at', ARGV[6], 'created', ARGV[6])
  redis.call('ZADD', KEYS[3], seq, ARGV[i])
  redis.call('ZADD', KEYS[4], seq, ARGV[i])
end
redis.call('HSET', KEYS[1], 'cursor', ARGV[5])
return 1
"""
# KEYS[1] = the delivery. ARGV: queue key prefix, status, code or '', error or '', next_at, now.
_OUTCOME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local sub = redis.call('HGET', KEYS[1], 'subscription')
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'next_at', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], 'last_status')
else redis.call('HSET', KEYS[1], 'last_status', ARGV[3]) end
if ARGV[4] == '' then redis.call('HDEL', KEYS[1], 'last_error')
else redis.call('HSET', KEYS[1], 'last_error', ARGV[4]) end
if ARGV[2] == 'pending' then
  redis.call('HDEL', KEYS[1], 'done_at')
else
  redis.call('HSET', KEYS[1], 'done_at', ARGV[6])
  redis.call('ZREM', ARGV[1] .. sub, id)
end
return 1
"""
# KEYS: the delivery, the subscription's queue. ARGV: sub id, now.
_RETRY = """
if redis.call('HGET', KEYS[1], 'subscription') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') == 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'pending', 'next_at', ARGV[2], 'created', ARGV[2])
redis.call('HDEL', KEYS[1], 'done_at')
redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'seq'), redis.call('HGET', KEYS[1], 'id'))
return 1
"""
# KEYS[1] = the lease. ARGV: owner, milliseconds.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _decode(row: dict[str, str], fields: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        value = row.get(name)
        if value is None or name not in _INTS | _FLOATS:
            out[name] = value
        elif name in _INTS:
            out[name] = int(value)
        else:
            out[name] = float(value)
    return out


class RedisWebhookStore(WebhookStore):
    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis  # the 'redis' extra

        self._redis: Any = Redis.from_url(url.removeprefix("async+"), decode_responses=True)
        self._update = self._redis.register_script(_UPDATE)
        self._rotate = self._redis.register_script(_ROTATE)
        self._enqueue = self._redis.register_script(_ENQUEUE)
        self._outcome = self._redis.register_script(_OUTCOME)
        self._retry = self._redis.register_script(_RETRY)
        self._lease = self._redis.register_script(_LEASE)
        self._release = self._redis.register_script(_RELEASE)

    async def close(self) -> None:
        await self._redis.aclose()

    async def _set(self, key: str, values: dict[str, Any]) -> None:
        """Fields set (None: deleted), if the hash exists."""
        kept = [(k, v) for k, v in values.items() if v is not None]
        dropped = [k for k, v in values.items() if v is None]
        await self._update(keys=[key], args=[len(kept), *(x for pair in kept for x in pair), *dropped])

    # --- subscriptions -------------------------------------------------------------------------
    async def add(
        self, client: str, entity: str, url: str, query: dict[str, Any], types: list[str], cursor: str
    ) -> dict[str, Any]:
        sub_id = new_subscription_id()
        sub: dict[str, Any] = {
            "id": sub_id,
            "client": client,
            "entity": entity,
            "url": url,
            "query": orjson.dumps(query).decode(),
            "types": orjson.dumps(types).decode(),
            "secret": new_secret(),
            "cursor": cursor,
            "enabled": 1,
            "created": time.time(),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(PREFIX + "sub:" + sub_id, mapping=sub)
            pipe.zadd(PREFIX + "subs", {sub_id: sub["created"]})
            await pipe.execute()
        return _decode({k: str(v) for k, v in sub.items()}, SUB_FIELDS)

    async def get(self, sub_id: str) -> dict[str, Any] | None:
        row = await self._redis.hgetall(PREFIX + "sub:" + sub_id)
        return _decode(row, SUB_FIELDS) if row.get("id") else None

    async def subscriptions(self, client: str | None = None) -> list[dict[str, Any]]:
        ids = await self._redis.zrange(PREFIX + "subs", 0, -1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for sub_id in ids:
                pipe.hgetall(PREFIX + "sub:" + sub_id)
            rows = await pipe.execute() if ids else []
        subs = [_decode(row, SUB_FIELDS) for row in rows if row.get("id")]
        return [s for s in subs if client is None or s["client"] == client]

    async def remove(self, sub_id: str) -> None:
        deliveries = await self._redis.zrange(PREFIX + "all:" + sub_id, 0, -1)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(PREFIX + "subs", sub_id)
            pipe.delete(*(PREFIX + f"{name}:{sub_id}" for name in ("sub", "seq", "q", "all")))
            for start in range(0, len(deliveries), 1000):
                pipe.delete(*(PREFIX + "d:" + d for d in deliveries[start : start + 1000]))
            await pipe.execute()

    async def rotate(self, sub_id: str, overlap: float) -> str:
        secret = new_secret()
        await self._rotate(keys=[PREFIX + "sub:" + sub_id], args=[time.time() + overlap, secret])
        return secret

    async def set_enabled(self, sub_id: str, enabled: bool, reason: str | None = None) -> None:
        values: dict[str, Any] = {"enabled": int(enabled), "disabled_reason": reason}
        if enabled:
            values["failing_since"] = None
        await self._set(PREFIX + "sub:" + sub_id, values)

    async def failing(self, sub_id: str, since: float | None) -> None:
        await self._set(PREFIX + "sub:" + sub_id, {"failing_since": since})

    # --- the queue -----------------------------------------------------------------------------
    async def enqueue(
        self, sub_id: str, changes: list[tuple[int, str, str]], cursor: str, *, polled_from: str | None = None
    ) -> bool:
        args: list[Any] = [
            PREFIX + "d:",
            sub_id,
            "0" if polled_from is None else "1",
            polled_from or "",
            cursor,
            time.time(),
        ]
        for record, kind, change_cursor in changes:
            args += [new_delivery_id(), record, kind, change_cursor]
        keys = [PREFIX + f"{name}:{sub_id}" for name in ("sub", "seq", "q", "all")]
        return bool(await self._enqueue(keys=keys, args=args))

    async def _delivery(self, delivery: str) -> dict[str, Any] | None:
        row = await self._redis.hgetall(PREFIX + "d:" + delivery)
        return _decode(row, DELIVERY_FIELDS) if row.get("id") else None

    async def head(self, sub_id: str) -> dict[str, Any] | None:
        first = await self._redis.zrange(PREFIX + "q:" + sub_id, 0, 0)
        return await self._delivery(first[0]) if first else None

    async def outcome(
        self, delivery: str, status: str, *, code: int | None, error: str | None, next_at: float
    ) -> None:
        await self._outcome(
            keys=[PREFIX + "d:" + delivery],
            args=[PREFIX + "q:", status, "" if code is None else code, error or "", next_at, time.time()],
        )

    async def deliveries(self, sub_id: str, limit: int = 100) -> list[dict[str, Any]]:
        ids = await self._redis.zrange(PREFIX + "all:" + sub_id, 0, limit - 1, desc=True)
        async with self._redis.pipeline(transaction=False) as pipe:
            for delivery in ids:
                pipe.hgetall(PREFIX + "d:" + delivery)
            rows = await pipe.execute() if ids else []
        return [_decode(row, DELIVERY_FIELDS) for row in rows if row.get("id")]

    async def retry(self, sub_id: str, delivery: str) -> bool:
        keys = [PREFIX + "d:" + delivery, PREFIX + "q:" + sub_id]
        return bool(await self._retry(keys=keys, args=[sub_id, time.time()]))

    async def depth(self) -> int:
        ids = await self._redis.zrange(PREFIX + "subs", 0, -1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for sub_id in ids:
                pipe.zcard(PREFIX + "q:" + sub_id)
            counts = await pipe.execute() if ids else []
        return sum(int(n) for n in counts)

    # --- leases ----------------------------------------------------------------------------------
    async def lease(self, name: str, owner: str, seconds: float) -> bool:
        ms = max(1, int(seconds * 1000))
        return bool(await self._lease(keys=[PREFIX + "lease:" + name], args=[owner, ms]))

    async def release(self, name: str, owner: str) -> None:
        await self._release(keys=[PREFIX + "lease:" + name], args=[owner])
