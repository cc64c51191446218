"""The collaborators ``create_app`` builds once (gateway/services.py): each one runs on the
Timing it is given, and the backend wrapper offers only its explicit interface."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.backends.base import Backend, TransientError
from gateway.core.call import Call, parse
from gateway.core.errors import GatewayError
from gateway.core.policy import Policy
from gateway.core.results import Records
from gateway.flow.clients import Client
from gateway.services import Timing, build_services
from gateway.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Flaky(Backend):
    """Fails its first ``failures`` calls as if the connection was refused, then answers."""

    name = "flaky"

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[str, str]] = []

    async def call(self, call: Call, *, identity: Any = None) -> Records:
        self.calls.append((call.entity, call.action))
        if len(self.calls) <= self.failures:
            raise TransientError("upstream-unavailable", "refused", reached=False)
        return Records([{"id": 1}])


def settings(**overrides: Any) -> Settings:
    return Settings(backend="sandbox", metrics_enabled=False, **overrides)


async def test_retries_back_off_through_the_given_sleep() -> None:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    inner = Flaky(failures=2)
    found = build_services(
        settings(retry_backoff=0.2, retry_max_attempts=3, breaker_threshold=100),
        inner,
        timing=Timing(sleep=sleep),
    )
    assert await found.backend.call(parse(4, "Contact", "get", {})) == [{"id": 1}]
    assert len(inner.calls) == 3
    assert len(delays) == 2
    # Exponential with jitter: attempt n waits between half and all of backoff * 2**(n-1).
    assert 0.1 <= delays[0] <= 0.2
    assert 0.2 <= delays[1] <= 0.4


async def test_the_breaker_cools_down_on_the_given_clock() -> None:
    clock = Clock()
    inner = Flaky(failures=2)
    found = build_services(
        settings(retry_max_attempts=1, breaker_threshold=2, breaker_cooldown=30),
        inner,
        timing=Timing(clock=clock),
    )
    for _ in range(2):
        with pytest.raises(TransientError):
            await found.backend.call(parse(4, "Contact", "get", {}))
    with pytest.raises(GatewayError) as refused:
        await found.backend.call(parse(4, "Contact", "get", {}))
    assert refused.value.slug == "upstream-unavailable"
    assert refused.value.headers == {"Retry-After": "30"}
    assert len(inner.calls) == 2  # failed fast: not sent
    clock.now += 30
    assert await found.backend.call(parse(4, "Contact", "get", {})) == [{"id": 1}]
    assert found.backend.breaker.state == "closed"


async def test_metadata_expires_on_the_given_clock_and_flushes() -> None:
    clock = Clock()
    inner = Flaky()
    found = build_services(settings(metadata_cache_ttl=60), inner, timing=Timing(clock=clock))
    backend = found.backend
    for _ in range(2):
        await backend.call(parse(4, "Contact", "getFields", {}))
    assert len(inner.calls) == 1
    clock.now += 61
    await backend.call(parse(4, "Contact", "getFields", {}))
    assert len(inner.calls) == 2
    generation = backend.metadata_generation()
    assert backend.flush_metadata() == 1
    assert backend.metadata_generation() == generation + 1
    await backend.call(parse(4, "Contact", "getFields", {}))
    assert len(inner.calls) == 3


async def test_the_limiter_waits_as_long_as_told() -> None:
    found = build_services(settings(client_concurrency=1), Flaky(), timing=Timing(concurrency_wait=0.05))
    client = Client("one", Policy())
    async with found.limiter.admit(client, cost=0):
        async with asyncio.timeout(2):  # the default wait (10 s) would end here
            with pytest.raises(GatewayError) as refused:
                async with found.limiter.admit(client, cost=0):
                    pass
    assert refused.value.slug == "rate-limited"


def test_the_wrapper_forwards_nothing_but_its_interface() -> None:
    inner = Flaky()
    backend = build_services(settings(), inner).backend
    assert backend.unwrapped() is inner
    assert backend.name == "flaky"
    with pytest.raises(AttributeError):
        backend.failures  # noqa: B018 (an attribute of the inner backend only)


class Cut(Backend):
    """Its first call is cut after it was sent (it may have run); then it answers."""

    name = "cut"

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, call: Call, *, identity: Any = None) -> Records:
        self.calls += 1
        if self.calls == 1:
            raise TransientError("upstream-invalid-response", "cut", reached=True)
        return Records([{"id": 1}])


@pytest.mark.parametrize("chain", ["api.Contact.create", "api_Contact_create"])
async def test_a_metadata_call_chaining_a_write_is_neither_cached_nor_retried(chain: str) -> None:
    """Both spellings of an APIv3 chain are one call to the resilience layer, which asks the
    parsed call (issue 27: the underscore spelling was served from the metadata cache and
    retried as a safe read)."""
    fast = settings(retry_backoff=0.001, retry_max_attempts=3, metadata_cache_ttl=60)
    inner = Cut()
    backend = build_services(fast, inner).backend
    call = parse(3, "Contact", "getfields", {chain: {"first_name": "Ada"}})
    with pytest.raises(TransientError):
        await backend.call(call)  # it may have created a contact: not sent again
    assert inner.calls == 1
    await backend.call(call)
    await backend.call(call)
    assert inner.calls == 3  # never answered from the cache
    # The same getfields without the chain is metadata: retried, then cached.
    inner = Cut()
    backend = build_services(fast, inner).backend
    plain = parse(3, "Contact", "getfields", {})
    assert await backend.call(plain) == [{"id": 1}]
    assert await backend.call(plain) == [{"id": 1}]
    assert inner.calls == 2
