"""Where the routes meet the audit trail: a wrapper around the single-call handler and one
around the batch handler, and the two notes those handlers leave on the request (the parsed
call, the batch's calls) so the record can name the fields written.

The wrappers see the outcome as the client does: the answer, or the exception the app's error
handlers turn into a problem (a ``GatewayError``'s status and type; anything else is the 500
``internal-error``). The ids come from the answer, the records CiviCRM says it wrote.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.core.call import Call
from gateway.core.errors import PROBLEM_BASE, GatewayError
from gateway.flow.audit.record import (
    DENIED_STATUSES,
    AuditRecord,
    audited,
    clip,
    idempotency_key,
    ids_in,
    ids_named,
    utc_now,
    written,
)
from gateway.services import services

CallHandler = Callable[[Request, int, str, str], Awaitable[Response]]
BatchHandler = Callable[[Request], Awaitable[Response]]


def note_call(request: Request, call: Call) -> None:
    """The call as parsed and checked (what CiviCRM will receive)."""
    request.state.audit_call = call


def note_batch(request: Request, calls: dict[str, Any], prepared: dict[str, Call]) -> None:
    """The batch's calls as sent, and those that passed the checks (as parsed)."""
    request.state.audit_batch = (calls, prepared)


def _members(request: Request) -> Iterator[tuple[str, str, str, Call | None]]:
    """(name, entity, action, parsed call or None) of each noted batch member."""
    calls, prepared = getattr(request.state, "audit_batch", ({}, {}))
    for name, spec in calls.items():
        if isinstance(spec, list) and len(spec) >= 2 and all(isinstance(s, str) for s in spec[:2]):
            yield name, spec[0], spec[1], prepared.get(name)


def _failure(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, GatewayError):
        return exc.status, exc.slug
    return 500, "internal-error"


def _answer(response: Response) -> Any:
    body = getattr(response, "body", None)
    if not isinstance(body, bytes | memoryview) or not body:
        return None  # streamed: a read, never recorded on success
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _slug(problem: Any) -> str | None:
    kind = problem.get("type") if isinstance(problem, dict) else None
    return kind.removeprefix(PROBLEM_BASE) if isinstance(kind, str) else None


class _Context:
    """What every record of one request shares."""

    def __init__(self, request: Request, version: int) -> None:
        self.request = request
        self.version = version
        self.time = utc_now()
        self.started = time.perf_counter()

    def record(
        self,
        entity: str | None,
        action: str,
        call: Call | None,
        status: int,
        problem: str | None,
        answer: Any = None,
        replayed: bool = False,
        batch: str | None = None,
    ) -> AuditRecord:
        request = self.request
        trail = services(request).audit
        fields, values = written(call, trail.with_values) if call is not None else ((), None)
        return AuditRecord(
            time=self.time,
            request_id=getattr(request.state, "request_id", None),
            client=getattr(request.state, "client", None),
            source=request.client.host if request.client else None,
            version=self.version,
            entity=clip(call.entity if call else entity),
            action=clip(call.action if call else action) or "",
            batch=batch,
            ids=ids_in(answer) or (ids_named(call) if status < 400 else ()),
            fields=fields,
            values=values if values is not None or not trail.with_values else (),
            status=status,
            problem=problem,
            idempotency_key=idempotency_key(request.headers.get("idempotency-key")),
            replayed=replayed,
            duration_ms=round((time.perf_counter() - self.started) * 1000, 2),
        )


async def audited_call(
    request: Request, version: int, entity: str, action: str, handle: CallHandler
) -> Response:
    """``handle`` the call; record it if it writes or was refused."""
    trail = services(request).audit
    if not trail.enabled:
        return await handle(request, version, entity, action)
    context = _Context(request, version)
    try:
        response = await handle(request, version, entity, action)
    except Exception as exc:
        status, problem = _failure(exc)
        call = getattr(request.state, "audit_call", None)
        if audited(version, action, call, status):
            trail.add(context.record(entity, action, call, status, problem))
        raise
    call = getattr(request.state, "audit_call", None)
    status = response.status_code
    if audited(version, action, call, status):
        answer = _answer(response)
        trail.add(
            context.record(
                entity,
                action,
                call,
                status,
                _slug(answer) if status >= 400 else None,
                answer if status < 400 else None,
                replayed=response.headers.get("idempotent-replayed") == "true",
            )
        )
    return response


async def audited_batch(request: Request, version: int, handle: BatchHandler) -> Response:
    """``handle`` the batch; record each member that writes or was refused (the whole batch
    when it was refused before its calls were read)."""
    trail = services(request).audit
    if not trail.enabled:
        return await handle(request)
    context = _Context(request, version)
    try:
        response = await handle(request)
    except Exception as exc:
        status, problem = _failure(exc)
        members = list(_members(request))
        if not members and status in DENIED_STATUSES:
            trail.add(context.record(None, "batch", None, status, problem))
        for name, entity, action, call in members:  # the batch failed as a whole
            if audited(version, action, call, status):
                trail.add(context.record(entity, action, call, status, problem, batch=name))
        raise
    answer = _answer(response)
    replayed = response.headers.get("idempotent-replayed") == "true"
    entries = answer if isinstance(answer, dict) else {}
    for name, entity, action, call in _members(request):
        entry = entries.get(name)
        if not isinstance(entry, dict):
            continue
        member_status = entry.get("status")
        if not isinstance(member_status, int) or not audited(version, action, call, member_status):
            continue
        ok = member_status < 400
        trail.add(
            context.record(
                entity,
                action,
                call,
                member_status,
                None if ok else _slug(entry.get("error")),
                entry.get("values") if ok else None,
                replayed,
                batch=name,
            )
        )
    return response
