"""The deliverer: polls each subscription's feed and POSTs its changes, signed.

One delivery per change, in the order the feed reported them; a subscription's next delivery
waits until the one before it is delivered or dead-lettered, so the changes of a record reach
the receiver in order. Signed per Standard Webhooks with the ``standardwebhooks`` library:
``webhook-id`` (stable across retries: receivers de-duplicate on it), ``webhook-timestamp``
(of the attempt), ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``;
during a secret rotation, one signature per secret, space-separated).

Retries: exponential backoff with full jitter from ``base`` up to ``cap`` seconds, for
``give_up`` seconds after the change was queued; then the delivery is ``dead``. A
subscription whose deliveries have failed without a success for ``disable_after`` seconds is
disabled, with the reason. The record is read when each attempt is made, by a ``get`` under
the subscribing client's policy as it is then: a change its policy no longer lets it read is
``refused``, never sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from standardwebhooks.webhooks import Webhook

from gateway.core.errors import GatewayError
from gateway.flow.changes import ChangeFeed, FeedQuery
from gateway.flow.clients import Client
from gateway.flow.webhooks.store import WebhookStore
from gateway.flow.webhooks.targets import Targets

log = logging.getLogger("gateway.webhooks")


@dataclass(frozen=True)
class DeliveryRetry:
    base: float = 5.0
    cap: float = 3600.0
    give_up: float = 86_400.0
    disable_after: float = 3 * 86_400.0

    def delay(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: exponential, jittered."""
        ceiling = min(self.cap, self.base * 2 ** min(attempts - 1, 30))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not a secret)


def signatures(secrets: list[str], msg_id: str, when: datetime, body: bytes) -> str:
    return " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets)


class Deliverer:
    def __init__(
        self,
        store: WebhookStore,
        feed: ChangeFeed,
        targets: Targets,
        clients: Callable[[str], Client | None],
        retry: DeliveryRetry,
        *,
        interval: float,
        timeout: float,
        on_outcome: Callable[[str], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.feed = feed
        self.targets = targets
        self.clients = clients
        self.retry = retry
        self.interval = interval
        self.timeout = timeout
        self.on_outcome = on_outcome
        self.on_depth = on_depth
        self.owner = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._kick = asyncio.Event()
        # Leases: "poll:{entity}" (this process polls that entity's subscriptions; kept while
        # it lives, renewed each round) and "deliver:{subscription}" (taken for one round's
        # deliveries, so replicas share them and one subscription's go out one at a time).
        self.poll_lease = interval * 3 + 10
        self.deliver_lease = timeout * 2 + 30
        self._held: set[str] = set()

    # --- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
        for name in sorted(self._held):
            await self.store.release(name, self.owner)
        self._held.clear()
        await self.store.close()

    def kick(self) -> None:
        """Look now (a subscription changed, a retry was asked for)."""
        self._kick.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook round failed")
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self._kick.clear()

    # --- one round -----------------------------------------------------------------------------
    async def round(self) -> None:
        """Poll every enabled subscription's feed, then deliver what is due."""
        subs = await self.store.subscriptions()
        polled: dict[str, bool] = {}
        for sub in subs:
            if not sub["enabled"]:
                continue
            client = self.clients(sub["client"])
            if client is None or not client.policy.webhooks:
                await self.store.set_enabled(
                    sub["id"],
                    False,
                    "its client no longer exists or may not use webhooks",
                )
                continue
            poll = "poll:" + sub["entity"].lower()
            if poll not in polled:
                polled[poll] = await self._take(poll, self.poll_lease)
            if polled[poll]:
                await self._poll(sub, client)
            deliver = "deliver:" + sub["id"]
            if await self._take(deliver, self.deliver_lease):
                try:
                    await self._deliver_due(sub, client)
                finally:
                    self._held.discard(deliver)
                    await self.store.release(deliver, self.owner)
        if self.on_depth is not None:
            self.on_depth(await self.store.depth())

    async def _take(self, name: str, seconds: float) -> bool:
        """Lease ``name`` taken or renewed (False: another process holds it)."""
        if await self.store.lease(name, self.owner, seconds):
            self._held.add(name)
            return True
        self._held.discard(name)
        return False

    async def _poll(self, sub: dict[str, Any], client: Client) -> None:
        query = orjson.loads(sub["query"])
        types = set(orjson.loads(sub["types"]))
        try:
            page = await self.feed.poll(
                client, sub["entity"], sub["cursor"], FeedQuery(query["select"], query["where"], 100)
            )
        except GatewayError as exc:
            if exc.status in (400, 403, 404):
                await self.store.set_enabled(sub["id"], False, f"its feed was refused: {exc.detail}"[:500])
            else:
                log.warning("webhook %s: feed poll failed: %s", sub["id"], exc.detail)
            return
        if page.cursor == sub["cursor"] and not page.records:
            return
        changes = [
            (int(r["id"]), r["_change"]["type"], r["_change"]["cursor"])
            for r in page.records
            if r["_change"]["type"] in types
        ]
        # only from the cursor polled: a poller that lost its lease meanwhile queues nothing
        if await self.store.enqueue(sub["id"], changes, page.cursor, polled_from=sub["cursor"]):
            sub["cursor"] = page.cursor

    async def _deliver_due(self, sub: dict[str, Any], client: Client) -> None:
        while True:
            if not await self._take("deliver:" + sub["id"], self.deliver_lease):
                return  # expired while this process was held up, and taken by another
            delivery = await self.store.head(sub["id"])
            if delivery is None or delivery["next_at"] > time.time():
                return
            if not await self._attempt(sub, client, delivery):
                return

    async def _payload(self, sub: dict[str, Any], client: Client, delivery: dict[str, Any]) -> dict[str, Any]:
        """The change as the client may read it now (GatewayError: it may not)."""
        query = orjson.loads(sub["query"])
        params: dict[str, Any] = {"where": [["id", "=", delivery["record"]]], "limit": 1}
        if delivery["type"] == "deleted":
            params["select"] = ["id"]
            await self.feed.flow.prepare(client, 4, sub["entity"], "get", params, reads_only=True)
            record: dict[str, Any] = {"id": delivery["record"]}
        else:
            params["where"] = [*query["where"], *params["where"]]
            if query["select"] is not None:
                params["select"] = query["select"]
            call = await self.feed.flow.prepare(client, 4, sub["entity"], "get", params, reads_only=True)
            body, _ = await self.feed.flow.records(client, call)
            record = body[0] if body else {"id": delivery["record"]}
        record["_change"] = {"type": delivery["type"], "cursor": delivery["change_cursor"]}
        return {
            "type": f"{sub['entity']}.{delivery['type']}",
            "timestamp": datetime.fromtimestamp(delivery["created"], UTC).isoformat().replace("+00:00", "Z"),
            "data": record,
        }

    async def _attempt(self, sub: dict[str, Any], client: Client, delivery: dict[str, Any]) -> bool:
        """One attempt; True when the delivery is settled (the next may go)."""
        try:
            payload = await self._payload(sub, client, delivery)
        except GatewayError as exc:
            if exc.status in (401, 403, 404):
                await self._settle(
                    delivery, "refused", None, f"the client's policy refuses it now: {exc.slug}"
                )
                return True
            return await self._failed(sub, delivery, None, f"reading the record failed: {exc.slug}")
        if not self.targets.allows(sub["url"]):
            await self.store.set_enabled(
                sub["id"], False, "its URL is no longer on the operator's allow-list"
            )
            return False
        body = orjson.dumps(payload)
        now = datetime.now(UTC)
        secrets = [sub["secret"]]
        if sub["old_secret"] and (sub["old_until"] or 0) > time.time():
            secrets.append(sub["old_secret"])
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery["id"],
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures(secrets, delivery["id"], now, body),
            "user-agent": "civicrm-gateway-webhooks",
        }
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(
                sub["url"], data=body, headers=headers, allow_redirects=False
            ) as answer:
                code = answer.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return await self._failed(sub, delivery, None, type(exc).__name__)
        if 200 <= code < 300:
            await self._settle(delivery, "delivered", code, None)
            if sub.get("failing_since") is not None:
                await self.store.failing(sub["id"], None)
                sub["failing_since"] = None
            return True
        return await self._failed(sub, delivery, code, f"HTTP {code}")

    async def _settle(
        self, delivery: dict[str, Any], status: str, code: int | None, error: str | None
    ) -> None:
        await self.store.outcome(delivery["id"], status, code=code, error=error, next_at=0)
        if self.on_outcome is not None:
            self.on_outcome(status)

    async def _failed(
        self, sub: dict[str, Any], delivery: dict[str, Any], code: int | None, error: str
    ) -> bool:
        now = time.time()
        if sub.get("failing_since") is None:
            sub["failing_since"] = now
            await self.store.failing(sub["id"], now)
        elif now - sub["failing_since"] >= self.retry.disable_after:
            await self.store.set_enabled(
                sub["id"],
                False,
                f"every delivery failed for {self.retry.disable_after / 3600:g} h (last: {error})",
            )
        if now - delivery["created"] >= self.retry.give_up:
            await self._settle(delivery, "dead", code, error)
            return True
        wait = self.retry.delay(delivery["attempts"] + 1)
        await self.store.outcome(delivery["id"], "pending", code=code, error=error, next_at=now + wait)
        if self.on_outcome is not None:
            self.on_outcome("failed")
        return False
