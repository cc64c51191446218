"""``GET /audit``: the audit trail over HTTP, newest first, as a plain JSON list.

Who reads what is the client's ``audit`` policy: ``own`` (its own records), ``all`` (an
admin's), ``none`` (the default: 403 ``gateway-policy-denied``). Without client tokens, the
operator on the same host reads everything: a loopback caller not behind a proxy, never a
caller let in by ``CIVI_GATEWAY_ALLOW_ANONYMOUS``. Paged: ``limit``, and ``cursor`` from the
``X-Next-Cursor`` header of the previous page.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from gateway.core.errors import GatewayError, invalid_request
from gateway.core.policy import denied
from gateway.flow.audit.store import Query as AuditQuery
from gateway.flow.audit.store import parse_time, search
from gateway.flow.clients import Client
from gateway.services import services
from gateway.settings import is_loopback
from gateway.web.calls import authenticate, is_proxied
from gateway.web.openapi.paths import problem_schema
from gateway.web.responses import JSONResponse

MAX_LIMIT = 1000
_MAX_INT = 2**63 - 1  # SQLite's largest integer

RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "seq",
        "time",
        "client",
        "source",
        "version",
        "entity",
        "action",
        "ids",
        "fields",
        "status",
        "duration_ms",
    ],
    "properties": {
        "seq": {"type": "integer", "description": "Position in the trail (the paging cursor)"},
        "time": {"type": "string", "format": "date-time", "description": "When the call arrived (UTC)"},
        "request_id": {"type": ["string", "null"], "description": "The call's X-Request-ID"},
        "client": {"type": ["string", "null"], "description": "Client name (null: no valid token)"},
        "source": {"type": ["string", "null"], "description": "Peer address"},
        "version": {"type": "integer", "enum": [3, 4]},
        "entity": {"type": ["string", "null"]},
        "action": {"type": "string"},
        "batch": {"type": ["string", "null"], "description": "The call's name in a batch"},
        "face": {"type": "string", "description": "How the call came: rest, cli or mcp"},
        "ids": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "Ids of the records CiviCRM's answer lists",
        },
        "fields": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Field names written (a chained call's as Entity.field)",
        },
        "values": {
            "type": ["array", "null"],
            "items": {"type": "object"},
            "description": "One map per record written; null unless "
            "CIVI_GATEWAY_AUDIT_VALUES=true; credentials masked",
        },
        "status": {"type": "integer", "description": "The HTTP status answered"},
        "problem": {"type": ["string", "null"], "description": "The problem type, on failure"},
        "idempotency_key": {"type": ["string", "null"]},
        "replayed": {"type": "boolean", "description": "Answered from the Idempotency-Key store"},
        "duration_ms": {"type": "number"},
    },
}
_PROBLEM = {"application/problem+json": {"schema": problem_schema()}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Audit records, newest first",
        "headers": {
            "X-Next-Cursor": {
                "description": "Pass as cursor for the next page (absent on the last page)",
                "schema": {"type": "integer"},
            }
        },
        "content": {"application/json": {"schema": {"type": "array", "items": RECORD_SCHEMA}}},
    },
    400: {"description": "invalid-request", "content": _PROBLEM},
    401: {"description": "unauthenticated", "content": _PROBLEM},
    403: {
        "description": 'gateway-policy-denied: this client\'s policy has audit = "none", or '
        "it asked for another client's records",
        "content": _PROBLEM,
    },
    404: {"description": "route-not-found: the SQLite audit sink is off", "content": _PROBLEM},
    429: {"description": "rate-limited", "content": _PROBLEM},
}

router = APIRouter(tags=["service"])


def _scope(request: Request, client: Client) -> str:
    """``own`` or ``all``; a refusal otherwise."""
    if not services(request).authenticator.enabled:
        peer = request.client.host if request.client else None
        if peer is not None and is_loopback(peer) and not is_proxied(request):
            return "all"
        raise denied(
            "Without client tokens only the operator on this host (a loopback caller, "
            "not through a proxy) may read the audit trail."
        )
    if client.policy.audit == "none":
        raise denied(
            "This client may not read the audit trail (its policy's audit is "
            '"none"; "own" or "all" allow it).'
        )
    return client.policy.audit


def _time(name: str, value: str | None) -> str | None:
    try:
        return None if value is None else parse_time(value)
    except ValueError as exc:
        raise invalid_request(f"{name}: {exc}") from None


@router.get(
    "/audit",
    name="audit",
    operation_id="service_audit",
    summary="The audit trail: writes and refused calls",
    responses=RESPONSES,
    description="One record per write call (batch members and chained writes "
    "included) and per refused call. A client reads its own records when "
    'its policy says audit = "own", every client\'s with "all".',
)
async def read_audit(
    request: Request,
    entity: Annotated[str | None, Query(description="e.g. Contact", max_length=80)] = None,
    id: Annotated[int | None, Query(description="A record id the call affected", ge=0, le=_MAX_INT)] = None,
    client: Annotated[str | None, Query(description="Client name", max_length=64)] = None,
    action: Annotated[str | None, Query(description="e.g. create", max_length=80)] = None,
    since: Annotated[str | None, Query(description="ISO 8601 date or time (UTC unless it says)")] = None,
    until: Annotated[str | None, Query(description="ISO 8601 date or time, exclusive")] = None,
    outcome: Annotated[
        Literal["ok", "denied", "error"] | None,
        Query(description="ok (< 400), denied (401, 403), error (other)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, le=_MAX_INT, description="X-Next-Cursor of the previous page")
    ] = None,
) -> Response:
    caller = await authenticate(request)
    if _scope(request, caller) == "own":
        if client is not None and client != caller.name:
            raise denied("This client may read its own audit records only.")
        client = caller.name
    trail = services(request).audit
    if trail.sqlite_path is None:
        raise GatewayError(
            "route-not-found",
            'The audit trail is not kept in SQLite here (CIVI_GATEWAY_AUDIT_SINKS has no "sqlite").',
        )
    query = AuditQuery(
        client=client,
        entity=entity,
        id=id,
        action=action,
        since=_time("since", since),
        until=_time("until", until),
        outcome=outcome,
        limit=limit,
        before=cursor,
    )
    await trail.flush()  # a client reads its own write at once
    records, following = await asyncio.to_thread(search, trail.sqlite_path, query)
    headers = {"X-Next-Cursor": str(following)} if following is not None else {}
    return JSONResponse(records, headers=headers)
