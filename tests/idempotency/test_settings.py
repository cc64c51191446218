"""Idempotency settings and the per-client policy key: wrong values fail at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.core.policy import Policy
from gateway.settings import Settings


def test_redis_store_needs_a_redis_rate_limit_storage() -> None:
    with pytest.raises(
        ValidationError,
        match="CIVI_GATEWAY_IDEMPOTENCY_STORE=redis shares the "
        "rate limit's Redis: set CIVI_GATEWAY_RATE_LIMIT_STORAGE",
    ):
        Settings(idempotency_store="redis")
    ok = Settings(idempotency_store="redis", rate_limit_storage="redis://127.0.0.1:6379/0")
    assert ok.idempotency_store == "redis"


def test_the_lease_outlasts_any_call() -> None:
    assert Settings().idempotency_lease_seconds == 30 + 5 + 60
    assert Settings(http_timeout=600).idempotency_lease_seconds == 600 + 5 + 60
    assert Settings(idempotency_lease=90).idempotency_lease_seconds == 90
    with pytest.raises(
        ValidationError,
        match="CIVI_GATEWAY_IDEMPOTENCY_LEASE must be longer "
        r"than a call may take \(35 s",
    ):
        Settings(idempotency_lease=20)


def test_require_idempotency_key_is_a_boolean() -> None:
    assert Policy.from_mapping({"require_idempotency_key": True}).require_idempotency_key is True
    assert Policy.from_mapping({}).require_idempotency_key is False
    with pytest.raises(ValueError, match="require_idempotency_key must be true or false"):
        Policy.from_mapping({"require_idempotency_key": "yes"})
