"""Where the call flow meets the audit trail: one :class:`CallAudit` per call (and one
:class:`BatchAudit` per batch) learns the call as the flow does (the client once
authenticated, the call once prepared) and records the outcome as the caller gets it: the
answer, or the failure (a ``GatewayError``'s status and type; anything else is the 500
``internal-error``). The ids come from the answer, the records CiviCRM says it wrote.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

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
from gateway.flow.audit.trail import AuditTrail
from gateway.flow.outcome import Answer
from gateway.flow.request import Origin


def failure(exc: BaseException) -> tuple[int, str]:
    """The status and problem type the caller gets for ``exc``."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.slug
    return 500, "internal-error"


def _value(answer: Answer) -> Any:
    """The decoded answer: the flow's own, or (a replayed answer) its stored body's."""
    if answer.value is not None or answer.chunks is not None or not answer.body:
        return answer.value  # streamed: a read, never recorded on success
    try:
        return orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return None


def _slug(problem: Any) -> str | None:
    kind = problem.get("type") if isinstance(problem, dict) else None
    return kind.removeprefix(PROBLEM_BASE) if isinstance(kind, str) else None


class _Audit:
    """What every record of one request shares."""

    def __init__(self, trail: AuditTrail, origin: Origin, version: int) -> None:
        self.trail = trail
        self.origin = origin
        self.version = version
        self.time = utc_now()
        self.started = time.perf_counter()
        self.client: str | None = None

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
    ) -> None:
        trail = self.trail
        fields, values = written(call, trail.with_values) if call is not None else ((), None)
        trail.add(
            AuditRecord(
                time=self.time,
                request_id=self.origin.request_id,
                client=self.client,
                source=self.origin.source,
                version=self.version,
                entity=clip(call.entity if call else entity),
                action=clip(call.action if call else action) or "",
                batch=batch,
                face=self.origin.face,
                ids=ids_in(answer) or (ids_named(call) if status < 400 else ()),
                fields=fields,
                values=values if values is not None or not trail.with_values else (),
                status=status,
                problem=problem,
                idempotency_key=idempotency_key(self.origin.idempotency_key),
                replayed=replayed,
                duration_ms=round((time.perf_counter() - self.started) * 1000, 2),
            )
        )


class CallAudit(_Audit):
    """One call: recorded if it writes or was refused."""

    def __init__(self, trail: AuditTrail, origin: Origin, version: int, entity: str, action: str) -> None:
        super().__init__(trail, origin, version)
        self.entity = entity
        self.action = action
        self.call: Call | None = None  # as prepared (what CiviCRM receives)

    def failed(self, exc: BaseException) -> None:
        status, problem = failure(exc)
        if audited(self.version, self.action, self.call, status):
            self.record(self.entity, self.action, self.call, status, problem)

    def answered(self, answer: Answer) -> None:
        status = answer.status
        if audited(self.version, self.action, self.call, status):
            value = _value(answer)
            self.record(
                self.entity,
                self.action,
                self.call,
                status,
                _slug(value) if status >= 400 else None,
                value if status < 400 else None,
                replayed=answer.replayed,
            )


class BatchAudit(_Audit):
    """A batch: each member that writes or was refused (the whole batch when it was refused
    before its calls were read)."""

    def __init__(self, trail: AuditTrail, origin: Origin, version: int) -> None:
        super().__init__(trail, origin, version)
        # name -> (entity, action, the call as prepared or None if it was refused)
        self.members: dict[str, tuple[str, str, Call | None]] = {}

    def failed(self, exc: BaseException) -> None:
        status, problem = failure(exc)
        if not self.members and status in DENIED_STATUSES:
            self.record(None, "batch", None, status, problem)
        for name, (entity, action, call) in self.members.items():  # the batch failed as a whole
            if audited(self.version, action, call, status):
                self.record(entity, action, call, status, problem, batch=name)

    def answered(self, answer: Answer) -> None:
        value = _value(answer)
        entries = value if isinstance(value, dict) else {}
        for name, (entity, action, call) in self.members.items():
            entry = entries.get(name)
            if not isinstance(entry, dict):
                continue
            status = entry.get("status")
            if not isinstance(status, int) or not audited(self.version, action, call, status):
                continue
            ok = status < 400
            self.record(
                entity,
                action,
                call,
                status,
                None if ok else _slug(entry.get("error")),
                entry.get("values") if ok else None,
                answer.replayed,
                batch=name,
            )
