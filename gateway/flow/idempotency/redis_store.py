"""Idempotency entries in Redis, shared by every replica (the rate limit's Redis).

A claim is ``SET key entry NX PX ttl``; finishing and releasing compare the owner token (the
first 32 bytes of the value) inside a Lua script, so a replica never overwrites or drops an
entry another one owns now.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.flow.idempotency.store import Entry, Store

_PREFIX = "civicrm-gateway:idempotency:"
_FINISH = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 32) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
# In flight: the head has no status ("s") yet.
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 32) == ARGV[1] and not string.find(v, '"s":', 33, true) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore(Store):
    name = "redis"

    def __init__(self, url: str) -> None:
        # redis-py rather than coredis (which the rate limit uses): about half the time per
        # command, and a keyed write makes two (benchmarks/idempotency.py).
        from redis.asyncio import Redis  # the 'redis' extra

        self._redis: Any = Redis.from_url(url.removeprefix("async+"))
        # Sent by SHA once loaded, not as text on every write.
        self._finish = self._redis.register_script(_FINISH)
        self._release = self._redis.register_script(_RELEASE)

    @staticmethod
    def _ms(expires_at: float) -> int:
        return max(1, int((expires_at - time.time()) * 1000))

    async def claim(self, scope: str, entry: Entry) -> Entry | None:
        key = _PREFIX + scope
        while True:
            if await self._redis.set(key, entry.encode(), nx=True, px=self._ms(entry.expires_at)):
                return None
            found = await self._redis.get(key)
            if found is not None:  # else it expired in between: claim again
                return Entry.decode(found)

    async def finish(self, scope: str, owner: str, entry: Entry) -> bool:
        done = await self._finish(
            keys=[_PREFIX + scope], args=[owner, entry.encode(), self._ms(entry.expires_at)]
        )
        return bool(done)

    async def release(self, scope: str, owner: str) -> None:
        await self._release(keys=[_PREFIX + scope], args=[owner])

    async def close(self) -> None:
        await self._redis.aclose()
