"""What the call flow gives back to a face: an :class:`Answer` (status, media type, headers and
a body, whole or streamed), framework-free, so the HTTP routes, the command line and the MCP
tools each turn it into their own kind of reply without the flow knowing any of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.core.errors import PROBLEM_CONTENT_TYPE, GatewayError
from gateway.core.redact import REDACTOR

JSON = "application/json"


@dataclass
class Answer:
    """One call's answer. ``body`` is the whole encoded body; ``chunks`` (instead) a body
    streamed page by page whose first chunk was fetched before answering (so a failure before
    it was still a proper problem). ``value`` is the decoded answer when the flow had it (a
    face that wants objects, and the audit trail, read it instead of decoding ``body``)."""

    status: int = 200
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    value: Any = None
    replayed: bool = False

    @classmethod
    def json(cls, value: Any, headers: dict[str, str] | None = None, status: int = 200) -> Answer:
        return cls(status, orjson.dumps(value), media_type=JSON, headers=headers or {}, value=value)


def problem_body(error: GatewayError, instance: str | None = None) -> bytes:
    """The error as RFC 9457 problem+json, with any configured secret masked: the one rendering
    of a problem, whether answered now or replayed for an Idempotency-Key later."""
    return REDACTOR.text(orjson.dumps(error.body(instance)).decode()).encode()


def problem_answer(error: GatewayError, instance: str | None = None) -> Answer:
    return Answer(
        error.status,
        problem_body(error, instance),
        media_type=PROBLEM_CONTENT_TYPE,
        headers=dict(error.headers or {}),
    )
