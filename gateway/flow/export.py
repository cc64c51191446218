"""Streaming export of large APIv4 ``get`` results as NDJSON or CSV.

CiviCRM has no cursor, so the export pages through it: by keyset on ``id`` (``id > last``,
ordered by id) when the query allows it, which stays fast however deep it goes, else by
``offset`` with ``id`` added to the ordering as a tie-breaker. Each page is encoded and handed on
before the next is fetched, so memory holds one page whatever the total size.

Used by the API route (``format=ndjson|csv`` or an ``Accept`` header; and, as a JSON array,
for a plain unbounded ``get`` whose answer is larger than one page) and by the
``civicrm-gateway export`` command.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.backends.base import Backend
from gateway.core import expressions
from gateway.core.answercheck import check_answer, without_additions
from gateway.core.call import Call, Condition
from gateway.core.errors import invalid_request
from gateway.core.identity import Identity
from gateway.core.results import Records, response_body

MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8", "json": "application/json"}
_ACCEPT = {
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "text/csv": "csv",
    "application/json": "json",
}


def negotiate(format_param: str | None, accept: str | None) -> str:
    """``ndjson``, ``csv`` or ``json``: an explicit ``format=`` wins, then the first ``Accept``
    media type the gateway knows (``*/*`` and unknown types mean JSON)."""
    if format_param:
        if format_param not in MEDIA_TYPES:
            raise invalid_request(f"format must be json, ndjson or csv, not {format_param[:20]!r}.")
        return format_param
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in _ACCEPT:
            return _ACCEPT[media]
    return "json"


@dataclass
class _Plan:
    """How to page one get: the page call (less limit and offset) and the paging strategy."""

    call: Call
    keyset: bool
    total: float
    offset: int
    drop_id: bool


# Enters the client's rate and concurrency accounting around one page's upstream call
# (``first``: the page the request itself was already counted for).
Gate = Callable[[bool], AbstractAsyncContextManager[Any]]

_ID = expressions.parse("id")


def keyset_possible(call: Call) -> bool:
    """Whether ``pages`` can walk this get by ``id`` (no grouping, joins, custom order or
    aggregates), i.e. without offsets and in one stable order."""
    return _plan(call).keyset


def _plan(call: Call) -> _Plan:
    """The paging of ``call``, read from the parsed call (never from its params)."""
    order = call.order_by or ()
    select = call.select or ()
    keyset = (
        not call.group_by
        and not call.having
        and not call.join
        and (not order or [(e.text, d.upper()) for e, d in order] == [("id", "ASC")])
        and not any("row_count" in e.text or "(" in e.text for e in select)
    )
    base = replace(call, limit=None, offset=None)
    drop_id = False
    if keyset and select and not any(e.text in ("id", "*") for e in select):
        base = replace(base, select=(*select, _ID))  # the keyset needs it; dropped from the rows
        drop_id = True
    if keyset:
        base = replace(base, order_by=((_ID, "ASC"),))
    elif not call.group_by and not any(e.text == "id" for e, _ in order):
        base = replace(base, order_by=(*order, (_ID, "ASC")))  # a stable order across pages
    return _Plan(base, keyset, call.limit or math.inf, call.offset or 0, drop_id)


async def pages(
    backend: Backend,
    call: Call,
    *,
    page_size: int,
    identity: Identity | None = None,
    gate: Gate | None = None,
) -> AsyncIterator[Records]:
    """The records of an APIv4 get (a call the flow prepared), one page at a time: each page
    is the same call with its limit, offset or ``id >`` condition."""
    plan = _plan(call)
    where = plan.call.where or ()
    last_id: Any = None
    done = 0
    offset = plan.offset
    while done < plan.total:
        size = int(min(page_size, plan.total - done))
        page = replace(plan.call, limit=size)
        if plan.keyset and last_id is not None:
            page = replace(page, where=(*where, Condition(_ID, ">", last_id)))
        elif offset:
            page = replace(page, offset=offset)
        if gate is None:
            records = await backend.call(page, identity=identity)
        else:
            async with gate(done == 0 and last_id is None):
                records = await backend.call(page, identity=identity)
        count = len(records)
        if plan.keyset and count:
            last_id = records[-1].get("id") if isinstance(records[-1], dict) else None
            if last_id is None:
                raise invalid_request("Keyset paging needs 'id' in every record.")
        if plan.drop_id:
            records = Records([{k: v for k, v in r.items() if k != "id"} for r in records])
        if count:
            yield records
        if count < size:
            return
        done += count
        if not plan.keyset:
            offset += count


# A cell a spreadsheet would run as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)  # a negative number is data, not a formula
    text = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


class _CsvEncoder:
    """CSV with the columns of the first row (later rows: extra fields dropped, missing empty)."""

    def __init__(self) -> None:
        self.columns: list[str] | None = None

    def encode(self, rows: list[dict[str, Any]]) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        if self.columns is None:
            self.columns = list(rows[0]) if rows else []
            writer.writerow(self.columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in self.columns])
        return out.getvalue().encode()


def _ndjson(rows: list[Any]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


async def stream(
    backend: Backend,
    call: Call,
    fmt: str,
    *,
    page_size: int,
    identity: Identity | None = None,
    strip_credentials: bool = True,
    on_rows: Callable[[int], None] | None = None,
    gate: Gate | None = None,
) -> AsyncIterator[bytes]:
    """Encoded chunks (one per page) of the export; credential fields stripped unless allowed.
    ``json`` is one JSON array, written a page at a time."""
    if fmt not in ("ndjson", "csv", "json"):
        raise invalid_request(f"Cannot stream format {fmt!r}.")
    encoder = _CsvEncoder()
    wrote_header = False
    async for records in pages(backend, call, page_size=page_size, identity=identity, gate=gate):
        records = Records(without_additions(call, records))
        rows, _ = response_body(4, "get", records, strip_credentials=strip_credentials)
        check_answer(
            call, rows, credentials=not strip_credentials
        )  # each page as the whole answer is: against the call
        if fmt == "json":
            chunk = (b"," if wrote_header else b"[") + b",".join(orjson.dumps(r) for r in rows)
        else:
            chunk = _ndjson(rows) if fmt == "ndjson" else encoder.encode(rows)
        wrote_header = True
        if on_rows is not None:
            on_rows(len(rows))
        yield chunk
    if fmt == "json":
        yield b"]" if wrote_header else b"[]"
    elif fmt == "csv" and not wrote_header:
        yield encoder.encode([])  # an empty result still gets a (header-less) empty body


async def count(backend: Backend, call: Call, *, identity: Identity | None = None) -> int | None:
    """How many rows the export will give, when CiviCRM can tell (for a progress bar)."""
    counting = replace(
        call,
        select=(expressions.parse("row_count"),),
        group_by=None,
        having=None,
        order_by=None,
        limit=None,
        offset=None,
        chain={},
        options={},
    )
    records = await backend.call(counting, identity=identity)
    if records.count_matched is None:
        return None
    total = records.count_matched - (call.offset or 0)
    limit = call.limit or 0
    return max(0, min(total, limit) if limit else total)
