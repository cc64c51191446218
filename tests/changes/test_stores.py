"""The feed state and the webhook store keep one contract whatever the store: SQLite in the
state folder, or a real redis-server shared by replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.flow.changes.state import FeedState, make_feed_state
from gateway.flow.webhooks.store import WebhookStore, make_webhook_store


@pytest.fixture(params=["sqlite", "redis"])
def kind_and_url(request: pytest.FixtureRequest) -> tuple[str, str]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else "memory://"
    return request.param, url


@pytest.fixture
async def hooks(kind_and_url: tuple[str, str], tmp_path: Path) -> AsyncIterator[WebhookStore]:
    kind, url = kind_and_url
    store = make_webhook_store(kind, redis_url=url, sqlite_path=tmp_path / "webhooks.sqlite")
    yield store
    await store.close()


@pytest.fixture
async def feeds(kind_and_url: tuple[str, str], tmp_path: Path) -> AsyncIterator[FeedState]:
    kind, url = kind_and_url
    state = make_feed_state(kind, redis_url=url, sqlite_path=tmp_path / "changes.sqlite")
    yield state
    await state.close()


async def test_a_lease_has_one_owner_until_released_or_expired(hooks: WebhookStore) -> None:
    assert await hooks.lease("poll:contact", "a" * 32, 60)
    assert not await hooks.lease("poll:contact", "b" * 32, 60)
    assert await hooks.lease("poll:contact", "a" * 32, 60)  # renewed by its owner
    assert await hooks.lease("poll:activity", "b" * 32, 60)  # another name, another lease
    await hooks.release("poll:contact", "b" * 32)  # not b's to give up
    assert not await hooks.lease("poll:contact", "b" * 32, 60)
    await hooks.release("poll:contact", "a" * 32)
    assert await hooks.lease("poll:contact", "b" * 32, 0.3)
    assert not await hooks.lease("poll:contact", "a" * 32, 60)
    # b stops renewing (a dead replica): its lease expires and a takes it
    for _ in range(100):
        if await hooks.lease("poll:contact", "a" * 32, 60):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the lease never expired")
    assert not await hooks.lease("poll:contact", "b" * 32, 60)


async def test_the_queue_keeps_order_and_queues_a_poll_once(hooks: WebhookStore) -> None:
    sub = await hooks.add(
        "c", "Contact", "http://127.0.0.1:9/x", {"select": None, "where": []}, ["created"], "c0"
    )
    assert sub["secret"].startswith("whsec_") and sub["enabled"] == 1 and sub["cursor"] == "c0"
    assert await hooks.get(sub["id"]) == sub
    assert await hooks.enqueue(
        sub["id"], [(5, "created", "k5"), (6, "updated", "k6")], "c1", polled_from="c0"
    )
    # the same poll again (another poller, behind): nothing queued twice
    assert not await hooks.enqueue(sub["id"], [(5, "created", "k5")], "c1", polled_from="c0")
    assert (await hooks.get(sub["id"]) or {})["cursor"] == "c1"
    assert await hooks.depth() == 2
    head = await hooks.head(sub["id"])
    assert head is not None and (head["record"], head["type"], head["change_cursor"]) == (5, "created", "k5")
    assert head["id"].startswith("msg_") and head["status"] == "pending" and head["attempts"] == 0
    await hooks.outcome(head["id"], "pending", code=500, error="HTTP 500", next_at=123.5)
    again = await hooks.head(sub["id"])
    assert again is not None and again["id"] == head["id"]
    assert (again["attempts"], again["last_status"], again["last_error"], again["next_at"]) == (
        1,
        500,
        "HTTP 500",
        123.5,
    )
    await hooks.outcome(head["id"], "delivered", code=204, error=None, next_at=0)
    second = await hooks.head(sub["id"])
    assert second is not None and second["record"] == 6
    rows = await hooks.deliveries(sub["id"])
    assert [(r["record"], r["status"]) for r in rows] == [(6, "pending"), (5, "delivered")]
    assert rows[1]["last_error"] is None and rows[1]["done_at"] is not None
    assert not await hooks.retry(sub["id"], second["id"])  # still pending: nothing to retry
    assert not await hooks.retry("wh_other", head["id"])  # not this subscription's
    assert await hooks.retry(sub["id"], head["id"])
    first = await hooks.head(sub["id"])
    assert first is not None and first["id"] == head["id"]  # its place in the order kept
    assert await hooks.depth() == 2


async def test_subscriptions_change_and_go(hooks: WebhookStore) -> None:
    one = await hooks.add("c", "Contact", "http://h/1", {"select": ["id"], "where": []}, ["created"], "x")
    two = await hooks.add("d", "Activity", "http://h/2", {"select": None, "where": []}, ["deleted"], "y")
    assert [s["id"] for s in await hooks.subscriptions()] == [one["id"], two["id"]]
    assert [s["id"] for s in await hooks.subscriptions("d")] == [two["id"]]
    await hooks.failing(one["id"], 42.0)
    await hooks.set_enabled(one["id"], False, "it failed")
    found = await hooks.get(one["id"])
    assert found is not None
    assert (found["enabled"], found["disabled_reason"], found["failing_since"]) == (0, "it failed", 42.0)
    await hooks.set_enabled(one["id"], True)
    found = await hooks.get(one["id"])
    assert found is not None
    assert (found["enabled"], found["disabled_reason"], found["failing_since"]) == (1, None, None)
    secret = await hooks.rotate(one["id"], 60)
    found = await hooks.get(one["id"])
    assert found is not None and found["secret"] == secret and found["old_secret"] == one["secret"]
    assert found["old_until"] is not None
    await hooks.enqueue(one["id"], [(1, "created", "k")], "x2")
    await hooks.remove(one["id"])
    assert await hooks.get(one["id"]) is None
    await hooks.set_enabled(one["id"], False, "late")  # a removed subscription stays removed
    assert await hooks.get(one["id"]) is None
    assert not await hooks.enqueue(one["id"], [(2, "created", "k")], "x3")
    assert await hooks.deliveries(one["id"]) == []
    assert [s["id"] for s in await hooks.subscriptions()] == [two["id"]]
    assert await hooks.depth() == 0


async def test_feed_state(feeds: FeedState) -> None:
    assert await feeds.lineage("nope") is None
    await feeds.create("L1", "client", "Contact", "modified", '{"select":null}', True)
    found = await feeds.lineage("L1")
    assert found is not None
    assert (found.client, found.entity, found.mode, found.query, found.tracked) == (
        "client",
        "Contact",
        "modified",
        '{"select":null}',
        True,
    )
    assert await feeds.numbers("L1", 3) == 1
    assert await feeds.numbers("L1", 2) == 4
    old, new = "2024-01-01 10:00:00|aa", "2024-01-01 10:05:00|bb"
    await feeds.reported("L1", [(1, old, 1), (2, new, 2), (3, new, 5)], "1970-01-01 00:00:00")
    assert await feeds.seen("L1", [(1, old), (2, new), (3, new), (4, new)], 2) == {(1, old), (2, new)}
    await feeds.reported("L1", [(2, new, 6)], "2024-01-01 10:01:00")  # forgets the older
    assert await feeds.seen("L1", [(1, old), (2, new)], 10) == {(2, new)}
    assert await feeds.seen("L1", [(2, new)], 5) == set()  # now numbered 6
    await feeds.know("L1", [(1, ""), (2, "h2"), (3, "h3")])
    assert await feeds.known("L1") == {1: "", 2: "h2", 3: "h3"}
    await feeds.gone("L1", [3, 1])
    await feeds.gone("L1", [3])  # found again: still one deletion
    assert await feeds.known("L1") == {2: "h2"}
    assert await feeds.deletions("L1", 0, 10) == [1, 3]
    assert await feeds.deletions("L1", 0, 1) == [1]
    await feeds.number_deletions("L1", [(1, 7)])
    assert await feeds.deletions("L1", 7, 10) == [3]
    assert await feeds.deletions("L1", 6, 10) == [1, 3]
    await feeds.create("L2", "client", "Email", "snapshot", "{}", False)
    assert await feeds.forget_unused(1) == 0
    assert await feeds.forget_unused(-1) == 2  # unused since before tomorrow: everything
    assert await feeds.lineage("L1") is None
    assert await feeds.known("L1") == {}


def test_the_redis_store_needs_a_redis_url() -> None:
    from gateway.settings import Settings

    with pytest.raises(ValueError, match="CIVI_GATEWAY_CHANGES_STORE=redis shares the rate limit's Redis"):
        Settings(backend="sandbox", changes_store="redis")
    assert Settings(backend="sandbox", changes_store="redis", rate_limit_storage="redis://127.0.0.1:1/0")
