"""The one call flow: every face (HTTP routes, batch members, export pages, the command line,
MCP tools) hands a call here and gets an :class:`~gateway.flow.outcome.Answer` back.

authenticate -> charge the client's rate -> read the params -> prepare (parse, names,
validation, policy: :mod:`gateway.flow.prepare`) -> Idempotency-Key -> run on the backend
under the client's limits -> shape and check the answer; the audit trail records the outcome
of every call that writes or was refused. Framework-free: nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.backends.resilience import ResilientBackend
from gateway.core.call import Call
from gateway.core.errors import GatewayError, invalid_request
from gateway.core.schema import Schemas
from gateway.flow import export
from gateway.flow.audit import AuditTrail
from gateway.flow.audit.hooks import BatchAudit, CallAudit
from gateway.flow.clients import Authenticator, Client
from gateway.flow.idempotency import Idempotency, call_parts
from gateway.flow.outcome import Answer, problem_body
from gateway.flow.prepare import prepare_call, shape_result
from gateway.flow.ratelimit import Limiter
from gateway.flow.request import BatchRequest, CallRequest, Credentials, Origin
from gateway.telemetry.metrics import Metrics

# Gets that take no limit: Setting.get is not a paged query in CiviCRM.
_UNPAGED = frozenset({"Setting"})
_BATCH_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")


@dataclass(frozen=True)
class FlowConfig:
    """The few settings the flow itself reads."""

    validate_calls: bool = True
    export_page_size: int = 1000
    batch_max_calls: int = 50


class CallFlow:
    """The flow for one app (or one command): its collaborators, built once by the
    composition root (:mod:`gateway.services`)."""

    def __init__(
        self,
        config: FlowConfig,
        *,
        authenticator: Authenticator,
        limiter: Limiter,
        schemas: Schemas,
        backend: ResilientBackend,
        idempotency: Idempotency,
        audit: AuditTrail,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.authenticator = authenticator
        self.limiter = limiter
        self.schemas = schemas
        self.backend = backend
        self.idempotency = idempotency
        self.audit = audit
        self.metrics = metrics
        # Told the entity of every write that ran (the change feed wakes its waiting polls).
        self.write_listeners: list[Callable[[str], None]] = []

    # --- the steps -----------------------------------------------------------------------------
    async def authenticate(self, credentials: Credentials) -> Client:
        """The calling client. The request counts against its rate from here on, whether it
        is later refused or not."""
        client = self.authenticator.authenticate(
            credentials.authorization, credentials.peer, proxied=credentials.proxied
        )
        await self.limiter.charge(client, 1)
        return client

    async def prepare(
        self,
        client: Client,
        version: int,
        entity: str,
        action: str,
        params: dict[str, Any],
        *,
        reads_only: bool = False,
    ) -> Call:
        """The call parsed, its names resolved, validated and checked against the policy."""
        return await prepare_call(
            self.schemas,
            client,
            version,
            entity,
            action,
            params,
            validating=self.config.validate_calls,
            reads_only=reads_only,
        )

    # --- one call ------------------------------------------------------------------------------
    async def call(self, request: CallRequest) -> Answer:
        """One call, from credentials to answer; raises ``GatewayError`` for a refusal."""
        audit = (
            CallAudit(self.audit, request.origin, request.version, request.entity, request.action)
            if self.audit.enabled
            else None
        )
        try:
            client = await self.authenticate(request.credentials)
            if audit is not None:
                audit.client = client.name
            if request.on_client is not None:
                request.on_client(client.name)
            params = await request.params()
            call = await self.prepare(
                client, request.version, request.entity, request.action, params, reads_only=request.reads_only
            )
            if audit is not None:
                audit.call = call
            # A write (or a read chaining one) runs at most once per Idempotency-Key, claimed
            # only once the call passed its checks.
            answer = await self.idempotency.run(
                client,
                request.origin.idempotency_key,
                writes=not call.reads_only,
                parts=lambda: [call_parts(call)],
                answer=lambda: self.answer(client, call, request.fmt, format_named=request.format_named),
                instance=request.origin.instance,
            )
        except BaseException as exc:
            if audit is not None:
                audit.failed(exc)
            raise
        if audit is not None:
            audit.answered(answer)
        if not call.reads_only:
            self._wrote(call)
        return answer

    def _wrote(self, call: Call) -> None:
        for listener in self.write_listeners:
            listener(call.entity)

    async def answer(
        self, client: Client, call: Call, fmt: str = "json", *, format_named: bool = False
    ) -> Answer:
        """A prepared call's answer in ``fmt`` (json, ndjson or csv). ``format_named``: the
        caller named the format rather than preferring it; only then is a format that does not
        fit the call refused instead of answered as JSON."""
        if fmt == "json":
            return await self._json_answer(client, call)
        if call.version == 4 and call.action == "get":
            return await self._export_answer(client, call, fmt)
        if not format_named:
            return await self._json_answer(client, call)
        raise invalid_request(
            f"format={fmt} (or Accept: {export.MEDIA_TYPES[fmt].split(';')[0]}) streams APIv4 get calls only."
        )

    async def records(self, client: Client, call: Call) -> tuple[Any, dict[str, str]]:
        """One backend call under the client's limits, its records shaped and checked against
        the call: the answer body and its headers (counts)."""
        async with self.limiter.admit(client, cost=call.cost - 1):
            records = await self.backend.call(call, identity=client.identity)
        return shape_result(client, call, records)

    async def _whole_answer(self, client: Client, call: Call) -> Answer:
        body, headers = await self.records(client, call)
        return Answer.json(body, headers)

    async def _json_answer(self, client: Client, call: Call) -> Answer:
        """A plain JSON answer. An APIv4 get with no limit that finds more than one page of
        records is streamed as a JSON array, walked by id (:mod:`gateway.flow.export`), so a
        100,000-record read holds one page in memory, not the whole answer three times over.

        The first call asks for one record more than a page, in the caller's own order: a
        result that fits is answered exactly as CiviCRM ordered it, with its count headers.
        Only a larger one is re-read in id order and streamed (without X-Result-Count, which
        it cannot know yet); a failure after streaming has begun leaves the array
        unterminated."""
        if (
            call.version != 4
            or call.action != "get"
            or call.entity in _UNPAGED
            or call.limit
            or call.chain
            or not export.keyset_possible(call)
        ):
            return await self._whole_answer(client, call)
        page_size = self.config.export_page_size
        async with self.limiter.admit(client, cost=call.cost - 1):
            records = await self.backend.call(call.with_limit(page_size + 1), identity=client.identity)
        if len(records) <= page_size:
            body, headers = shape_result(client, call, records)
            return Answer.json(body, headers)
        del records
        chunks = self.pages(client, call, "json")
        try:
            first = await anext(chunks)
        except GatewayError as exc:
            # The same query passed a moment ago, so a refusal now is of the paging itself
            # (records without ids, an entity that cannot order by id): answer in one piece.
            if exc.status >= 500:
                raise
            return await self._whole_answer(client, call)
        return _streamed(first, chunks, export.MEDIA_TYPES["json"], {"X-Streamed": "true"})

    async def _export_answer(self, client: Client, call: Call, fmt: str) -> Answer:
        """An APIv4 get as NDJSON or CSV, page by page. The first page is fetched before
        answering, so a bad query still gets a problem; a failure after that cuts the stream
        short (the body is then incomplete)."""
        metrics = self.metrics

        def count_rows(n: int) -> None:
            if metrics is not None:
                metrics.export_rows.labels(fmt).inc(n)

        chunks = self.pages(client, call, fmt, on_rows=count_rows)
        first = await anext(chunks, b"")
        headers = {}
        if fmt == "csv":
            headers["Content-Disposition"] = f'attachment; filename="{call.entity}.csv"'
        return _streamed(first, chunks, export.MEDIA_TYPES[fmt], headers)

    def pages(
        self, client: Client, call: Call, fmt: str, *, on_rows: Callable[[int], None] | None = None
    ) -> AsyncIterator[bytes]:
        """A prepared get's records page by page, encoded and each checked against the call;
        every page after the first is one more call against the client's rate and holds one of
        its in-flight slots while it runs."""
        limiter = self.limiter

        def gate(first: bool) -> Any:
            return limiter.admit(client, cost=0 if first else 1)

        return export.stream(
            self.backend,
            call,
            fmt,
            page_size=self.config.export_page_size,
            identity=client.identity,
            strip_credentials=not client.policy.credential_fields,
            gate=gate,
            on_rows=on_rows,
        )

    # --- a batch -------------------------------------------------------------------------------
    async def batch(self, request: BatchRequest) -> Answer:
        """Many named calls: each prepared like a single call; those that pass go to the backend
        together (one CiviCRM multi-call request over HTTP for APIv4). Each name maps to
        ``{"status": 200, "values": ...}`` or ``{"status": N, "error": {problem}}``. Counts as
        one request per call against the client's rate."""
        audit = BatchAudit(self.audit, request.origin, request.version) if self.audit.enabled else None
        try:
            client = await self.authenticate(request.credentials)
            if audit is not None:
                audit.client = client.name
            if request.on_client is not None:
                request.on_client(client.name)
            calls = await request.params()
            answer = await self._batch(client, request, calls, audit)
        except BaseException as exc:
            if audit is not None:
                audit.failed(exc)
            raise
        if audit is not None:
            audit.answered(answer)
        return answer

    async def _batch(
        self, client: Client, request: BatchRequest, calls: dict[str, Any], audit: BatchAudit | None
    ) -> Answer:
        if not calls:
            raise invalid_request('The batch is empty: send {"name": [Entity, action, params]}.')
        if len(calls) > self.config.batch_max_calls:
            raise invalid_request(f"A batch may carry at most {self.config.batch_max_calls} calls.")
        specs = {name: _member(name, spec) for name, spec in calls.items()}
        outcome: dict[str, Any] = {}
        prepared: dict[str, Call] = {}
        for name, (entity, action, params) in specs.items():
            try:
                prepared[name] = await self.prepare(client, request.version, entity, action, params)
            except GatewayError as exc:
                outcome[name] = exc
        if audit is not None:
            audit.members = {name: (e, a, prepared.get(name)) for name, (e, a, _) in specs.items()}
        # The batch writes when a call that passed its checks does: it then runs at most once
        # per Idempotency-Key (the calls refused here are part of its fingerprint too).
        return await self.idempotency.run(
            client,
            request.origin.idempotency_key,
            writes=not all(c.reads_only for c in prepared.values()),
            parts=lambda: [
                (name, call_parts(prepared[name]) if name in prepared else spec)
                for name, spec in calls.items()
            ],
            answer=lambda: self._run_batch(
                client, request.version, list(calls), prepared, outcome, request.origin
            ),
            instance=request.origin.instance,
        )

    async def _run_batch(
        self,
        client: Client,
        version: int,
        names: list[str],
        prepared: dict[str, Call],
        outcome: dict[str, Any],
        origin: Origin,
    ) -> Answer:
        if prepared:
            # The request was counted on arrival; each call in it (chains too) counts as one.
            cost = max(0, sum(c.cost for c in prepared.values()) - 1)
            async with self.limiter.admit(client, cost=cost):
                outcome.update(await self.backend.batch(prepared, identity=client.identity))
            for call in prepared.values():
                if not call.reads_only:
                    self._wrote(call)
        answer: dict[str, Any] = {}
        for name in names:
            result = outcome[name]
            if isinstance(result, GatewayError):
                answer[name] = {"status": result.status, "error": _problem(result, origin.instance)}
            else:
                body, headers = shape_result(client, prepared[name], result)
                answer[name] = {"status": 200, "values": body}
                if "X-Total-Count" in headers:
                    answer[name]["total"] = int(headers["X-Total-Count"])
            if self.metrics is not None:
                self.metrics.batch_calls.labels(str(version), str(answer[name]["status"])).inc()
        return Answer.json(answer)


def _problem(error: GatewayError, instance: str) -> Any:
    return orjson.loads(problem_body(error, instance))


def _member(name: Any, spec: Any) -> tuple[str, str, dict[str, Any]]:
    """One batch member: ``[Entity, action, params?]`` under a short plain name."""
    if not (isinstance(name, str) and 1 <= len(name) <= 64 and set(name) <= _BATCH_NAME_CHARS):
        raise invalid_request(
            f"Invalid call name {str(name)[:80]!r}: use letters, digits and _.:- (at most 64 characters)."
        )
    if not (
        isinstance(spec, list)
        and 2 <= len(spec) <= 3
        and isinstance(spec[0], str)
        and isinstance(spec[1], str)
        and (len(spec) == 2 or isinstance(spec[2], dict))
    ):
        raise invalid_request(f"Call {name!r} must be [Entity, action, params?] with params an object.")
    return spec[0], spec[1], dict(spec[2]) if len(spec) == 3 else {}


def _streamed(first: bytes, rest: AsyncIterator[bytes], media_type: str, headers: dict[str, str]) -> Answer:
    """The chunk already fetched (so a failure before it was a proper problem), then the rest
    as it comes."""

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in rest:
            yield chunk

    return Answer(200, None, chunks=body(), media_type=media_type, headers=headers)
