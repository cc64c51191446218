"""The change feed's engine: one poll of a feed, long-polls and their limits.

Two ways to see changes, chosen per entity from its fields:

- ``modified``: entities with ``modified_date`` (Contact, Activity, Note, Relationship...).
  A keyset over (``modified_date``, ``id``) in that order, so records saved in the same
  second are all read, page after page. CiviCRM stamps ``modified_date`` when the statement
  runs, not when its transaction commits, so each poll also re-reads the last
  ``overlap`` seconds before the cursor and reports what it had not reported yet (the
  versions reported are kept per feed, numbered; a holder's cursor says which numbers it has).
- ``snapshot``: entities without it (Contribution, Membership, Participant, Email on 5.77):
  each poll reads every record the feed's where matches (up to ``max_ids``) and compares a
  hash of its selected fields with the one kept, reporting what differs.

Deletions (and trashed contacts, which CiviCRM's get stops listing) are seen by comparing the
ids the feed knows with the ids CiviCRM lists, at most every ``delete_scan`` seconds (at
once after a write through this gateway). Every read is a ``get`` prepared by the call flow
under the client's policy, as if the client had sent it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from gateway.core.errors import GatewayError, invalid_request
from gateway.flow.changes.cursor import CursorCodec, Position
from gateway.flow.changes.state import FeedState, Lineage
from gateway.flow.clients import Client
from gateway.flow.flow import CallFlow

_DATE = "%Y-%m-%d %H:%M:%S"
_EPOCH = "1970-01-01 00:00:00"
MAX_LIMIT = 1000
# Most records one overlap re-read looks at (their ids and dates only).
_WINDOW_ROWS = 5000


@dataclass(frozen=True)
class FeedLimits:
    overlap: float = 60.0
    poll_interval: float = 2.0
    max_wait: float = 30.0
    waits_per_client: int = 4
    waits: int = 64
    delete_scan: float = 30.0
    max_ids: int = 100_000


@dataclass(frozen=True)
class FeedQuery:
    select: list[Any] | None = None
    where: list[Any] = field(default_factory=list)
    limit: int = 100

    def key(self) -> str:
        return orjson.dumps({"select": self.select, "where": self.where}).decode()

    @classmethod
    def of(cls, params: dict[str, Any]) -> FeedQuery:
        """The feed params of a request (``cursor`` and ``wait`` are read by the route)."""
        unknown = set(params) - {"select", "where", "limit", "cursor", "wait"}
        if unknown:
            raise invalid_request(
                f"Unknown feed params: {', '.join(sorted(unknown))} (select, where, limit, cursor, wait)."
            )
        select = params.get("select")
        if select is not None and not (isinstance(select, list) and select):
            raise invalid_request("select must be a non-empty list of field names.")
        where = params.get("where", [])
        if not isinstance(where, list):
            raise invalid_request("where must be a list of clauses, as for a get.")
        limit = params.get("limit", 100)
        if isinstance(limit, str) and limit.isdigit():
            limit = int(limit)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise invalid_request(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
        return cls(select, where, limit)


@dataclass
class Page:
    records: list[dict[str, Any]]
    cursor: str
    mode: str
    deletions_tracked: bool


def _hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _window_rows(client: Client) -> int:
    """How many records an overlap re-read looks at: fewer for a client with a max_limit."""
    cap = client.policy.max_limit
    return _WINDOW_ROWS if cap is None else min(cap, _WINDOW_ROWS)


def _version(record: dict[str, Any]) -> str:
    """A record's version: its modified_date, and a hash of what the feed selects (a second
    save within the same second has the same date)."""
    return f"{record.get('modified_date') or _EPOCH}|{_hash(record)}"


def _earlier(date: str, seconds: float) -> str:
    try:
        return (datetime.strptime(date[:19], _DATE) - timedelta(seconds=seconds)).strftime(_DATE)
    except ValueError:
        return _EPOCH


def _after(modified: str, id_: int) -> list[Any]:
    return [
        "OR",
        [["modified_date", ">", modified], ["AND", [["modified_date", "=", modified], ["id", ">", id_]]]],
    ]


def _upto(modified: str, id_: int) -> list[Any]:
    return [
        "OR",
        [["modified_date", "<", modified], ["AND", [["modified_date", "=", modified], ["id", "<=", id_]]]],
    ]


class ChangeFeed:
    def __init__(
        self,
        flow: CallFlow,
        state: FeedState,
        codec: CursorCodec,
        limits: FeedLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flow = flow
        self.state = state
        self.codec = codec
        self.limits = limits
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._wakers: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        # writes seen through this gateway per entity, and the count each feed last scanned at
        self._writes: dict[str, int] = defaultdict(int)
        self._scanned_writes: dict[str, int] = {}
        self._waiting: dict[str, int] = defaultdict(int)
        self._waiting_total = 0
        self.on_lag: Callable[[str, float], None] | None = None

    # --- writes through the gateway ------------------------------------------------------------
    def wrote(self, entity: str) -> None:
        """A write to ``entity`` went through this gateway: waiting feeds look now, and look for
        deletions too."""
        key = entity.lower()
        self._writes[key] += 1
        self._wakers[key].set()
        self._wakers[key] = asyncio.Event()

    # --- reads through the flow ------------------------------------------------------------------
    async def _get(self, client: Client, entity: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        call = await self.flow.prepare(client, 4, entity, "get", params, reads_only=True)
        body, _ = await self.flow.records(client, call)
        return list(body)

    async def _all(self, client: Client, entity: str, params: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every record a get matches, page by page; None when there are more than max_ids."""
        call = await self.flow.prepare(client, 4, entity, "get", params, reads_only=True)
        rows: list[dict[str, Any]] = []
        async for chunk in self.flow.pages(client, call, "ndjson"):
            rows.extend(orjson.loads(line) for line in chunk.splitlines() if line.strip())
            if len(rows) > self.limits.max_ids:
                return None
        return rows

    # --- starting a feed -----------------------------------------------------------------------
    async def start(self, client: Client, entity: str, query: FeedQuery) -> Page:
        """A new feed positioned now: no records, and its first cursor."""
        # the client's own get, prepared first: a refusal is about the query as sent
        probe = await self.flow.prepare(
            client, 4, entity, "get", {**self._base(query), "limit": 1}, reads_only=True
        )
        entity = probe.entity
        fields = await self.flow.schemas.for_identity(client.identity).fields(entity)
        mode = "modified" if "modified_date" in fields else "snapshot"
        lineage = uuid.uuid4().hex
        where = query.where
        if mode == "modified":
            last = await self._get(
                client,
                entity,
                {
                    "select": ["id", "modified_date"],
                    "where": [*where, ["modified_date", "IS NOT NULL"]],
                    "orderBy": {"modified_date": "DESC", "id": "DESC"},
                    "limit": 1,
                },
            )
            top = await self._get(client, entity, {"select": ["id"], "orderBy": {"id": "DESC"}, "limit": 1})
            modified = str(last[0]["modified_date"]) if last else _EPOCH
            id_ = int(last[0]["id"]) if last else 0
            ids = await self._all(client, entity, {"select": ["id"], "where": where})
            tracked = ids is not None
            await self.state.create(lineage, client.name, entity, mode, query.key(), tracked)
            if ids is not None:
                await self.state.know(lineage, [(int(r["id"]), "") for r in ids])
            max_id = int(top[0]["id"]) if top else 0
            if last:
                # what the overlap window will re-read was there before the feed began
                before = await self._get(
                    client,
                    entity,
                    {
                        **self._keyed_select(query),
                        "where": [*where, ["modified_date", ">=", _earlier(modified, self.limits.overlap)]],
                        "limit": _window_rows(client),
                    },
                )
                versions = [(int(r["id"]), _version(r), 0) for r in before]
                await self.state.reported(lineage, versions, _EPOCH)
        else:
            records = await self._all(client, entity, self._snapshot_params(query))
            if records is None:
                raise invalid_request(
                    f"{entity} has no modified_date, so its feed compares snapshots, and this "
                    f"where matches more than {self.limits.max_ids} records: narrow it."
                )
            await self.state.create(lineage, client.name, entity, mode, query.key(), True)
            await self.state.know(lineage, [(int(r["id"]), _hash(r)) for r in records])
            modified, id_, max_id = "", 0, max((int(r["id"]) for r in records), default=0)
        self._scanned_writes[lineage] = self._writes[entity.lower()]
        position = Position(lineage, client.name, entity, modified, id_, max_id, 0)
        return Page([], self.codec.encode(position), mode, mode == "snapshot" or tracked)

    # --- polling -------------------------------------------------------------------------------
    async def resume(
        self, client: Client, entity: str, cursor: str, query: FeedQuery | None
    ) -> tuple[Position, Lineage]:
        """The cursor's position and feed, checked against who asks for what."""
        position = self.codec.decode(cursor)
        if position.client != client.name or position.entity.lower() != entity.lower():
            raise invalid_request(
                f"This cursor belongs to another feed (not {entity} for this client): start one "
                "without a cursor."
            )
        lineage = await self.state.lineage(position.lineage)
        if lineage is None:
            raise invalid_request(
                "This cursor's feed is no longer kept (unused for longer than the gateway keeps "
                "feeds, or its state was reset): start again without a cursor."
            )
        if query is not None and query.key() != lineage.query:
            raise invalid_request(
                "This cursor was issued for another select or where: send the same ones (or "
                "none), or start a new feed without a cursor."
            )
        return position, lineage

    async def poll(self, client: Client, entity: str, cursor: str, query: FeedQuery) -> Page:
        """The changes after ``cursor``, at most ``query.limit`` of them."""
        position, lineage = await self.resume(client, entity, cursor, None)
        if query.key() != lineage.query and (query.select is not None or query.where):
            raise invalid_request(
                "This cursor was issued for another select or where: send the same ones (or "
                "none), or start a new feed without a cursor."
            )
        stored = orjson.loads(lineage.query)
        query = FeedQuery(stored["select"], stored["where"], query.limit)
        if client.policy.max_limit is not None:
            query = FeedQuery(query.select, query.where, min(query.limit, client.policy.max_limit))
        async with self._locks[lineage.id]:
            if lineage.mode == "modified":
                return await self._poll_modified(client, lineage, position, query)
            return await self._poll_snapshot(client, lineage, position, query)

    def _base(self, query: FeedQuery) -> dict[str, Any]:
        params: dict[str, Any] = {"where": query.where}
        if query.select is not None:
            params["select"] = query.select
        return params

    def _snapshot_params(self, query: FeedQuery) -> dict[str, Any]:
        params = self._base(query)
        if query.select is not None and "id" not in query.select:
            params["select"] = [*query.select, "id"]
        return params

    def _keyed_select(self, query: FeedQuery) -> dict[str, Any]:
        """The feed's select with the keyset's fields added (none: every field)."""
        if query.select is None:
            return {}
        return {"select": [*query.select, *(f for f in ("id", "modified_date") if f not in query.select)]}

    def _shown(self, query: FeedQuery, record: dict[str, Any]) -> dict[str, Any]:
        """A record as the client's get would show it: modified_date only if selected."""
        select = query.select
        if select is not None and "modified_date" not in select and "*" not in select:
            record = {k: v for k, v in record.items() if k != "modified_date"}
        return record

    async def _scan_due(self, lineage: Lineage) -> bool:
        writes = self._writes[lineage.entity.lower()]
        if self._scanned_writes.get(lineage.id) != writes:
            return True
        return time.time() - lineage.scanned_at >= self.limits.delete_scan

    async def _poll_modified(self, client: Client, lineage: Lineage, at: Position, query: FeedQuery) -> Page:
        entity, where, state = lineage.entity, query.where, self.state
        window_start = _earlier(at.modified, self.limits.overlap)
        late: list[dict[str, Any]] = []
        if at.modified != _EPOCH or at.id:
            # committed late, or saved again within the same second: versions at or before the
            # cursor, inside the overlap window, that this holder was not given
            window = await self._get(
                client,
                entity,
                {
                    **self._keyed_select(query),
                    "where": [*where, ["modified_date", ">=", window_start], _upto(at.modified, at.id)],
                    "orderBy": {"modified_date": "ASC", "id": "ASC"},
                    "limit": _window_rows(client),
                },
            )
            pairs = [(int(r["id"]), _version(r)) for r in window]
            given = await state.seen(lineage.id, pairs, at.seq)
            late = [r for r, p in zip(window, pairs, strict=True) if p not in given][: query.limit]
        room = query.limit - len(late)
        fresh: list[dict[str, Any]] = []
        if room > 0:
            fresh = await self._get(
                client,
                entity,
                {
                    **self._keyed_select(query),
                    "where": [*where, _after(at.modified, at.id)],
                    "orderBy": {"modified_date": "ASC", "id": "ASC"},
                    "limit": room,
                },
            )
        changes: list[tuple[dict[str, Any], str]] = []
        # Concurrent inserts commit in any order: an id below one already reported can still be
        # new. A feed tracking deletions knows every id it started with or reported, so a new
        # record is one it does not know; an untracked feed has only the largest id reported.
        known: dict[int, str] = await state.known(lineage.id) if lineage.tracked and (late or fresh) else {}
        for record in [*late, *fresh]:
            id_ = int(record["id"])
            new = id_ > at.max_id or (lineage.tracked and id_ not in known)
            changes.append((record, "created" if new else "updated"))
        if lineage.tracked and changes:
            await state.know(lineage.id, [(int(r["id"]), "") for r, _ in changes])
        # deletions: ids the feed knew that CiviCRM no longer lists
        if lineage.tracked and len(changes) < query.limit and await self._scan_due(lineage):
            await self._scan(client, lineage, where)
        room = query.limit - len(changes)
        deleted = await state.deletions(lineage.id, at.seq, room) if room > 0 else []
        return await self._numbered(lineage, at, query, changes, deleted, modified=True)

    async def _scan(self, client: Client, lineage: Lineage, where: list[Any]) -> None:
        writes = self._writes[lineage.entity.lower()]
        rows = await self._all(client, lineage.entity, {"select": ["id"], "where": where})
        if rows is None:
            return
        current = {int(r["id"]) for r in rows}
        # Ids listed but not reported yet are not added: they are known once reported (above).
        known = await self.state.known(lineage.id)
        await self.state.gone(lineage.id, sorted(known.keys() - current))
        self._scanned_writes[lineage.id] = writes

    async def _poll_snapshot(self, client: Client, lineage: Lineage, at: Position, query: FeedQuery) -> Page:
        records = await self._all(client, lineage.entity, self._snapshot_params(query))
        if records is None:
            raise invalid_request(
                f"{lineage.entity}'s feed compares snapshots and its where now matches more than "
                f"{self.limits.max_ids} records: narrow it (start a new feed)."
            )
        known = await self.state.known(lineage.id)
        changes: list[tuple[dict[str, Any], str]] = []
        current: set[int] = set()
        for record in sorted(records, key=lambda r: int(r["id"])):
            id_ = int(record["id"])
            current.add(id_)
            if id_ not in known:
                changes.append((record, "created"))
            elif known[id_] != _hash(record):
                changes.append((record, "updated"))
        changes = changes[: query.limit]
        await self.state.know(lineage.id, [(int(r["id"]), _hash(r)) for r, _ in changes])
        await self.state.gone(lineage.id, sorted(known.keys() - current))
        room = query.limit - len(changes)
        deleted = await self.state.deletions(lineage.id, at.seq, room) if room > 0 else []
        return await self._numbered(lineage, at, query, changes, deleted, modified=False)

    async def _numbered(
        self,
        lineage: Lineage,
        at: Position,
        query: FeedQuery,
        changes: list[tuple[dict[str, Any], str]],
        deleted: list[int],
        *,
        modified: bool,
    ) -> Page:
        """The page: every change numbered, given its cursor, and remembered as given."""
        count = len(changes) + len(deleted)
        if count == 0:
            return Page([], self.codec.encode(at), lineage.mode, lineage.tracked)
        first = await self.state.numbers(lineage.id, count)
        out: list[dict[str, Any]] = []
        versions: list[tuple[int, str, int]] = []
        position = at
        seq = first
        for record, kind in changes:
            id_ = int(record["id"])
            if modified:
                stamp = str(record.get("modified_date") or _EPOCH)
                versions.append((id_, _version(record), seq))
                if (stamp, id_) > (position.modified, position.id):
                    position = position.moved(modified=stamp, id=id_)
            position = position.moved(seq=max(position.seq, seq), max_id=max(position.max_id, id_))
            cursor = self.codec.encode(position)
            out.append({**self._shown(query, record), "_change": {"type": kind, "cursor": cursor}})
            seq += 1
        numbered = []
        for id_ in deleted:
            position = position.moved(seq=max(position.seq, seq))
            numbered.append((id_, seq))
            out.append({"id": id_, "_change": {"type": "deleted", "cursor": self.codec.encode(position)}})
            seq += 1
        if versions:
            forget = _earlier(position.modified, 2 * self.limits.overlap + 1)
            await self.state.reported(lineage.id, versions, forget)
        if numbered:
            await self.state.number_deletions(lineage.id, numbered)
        if modified and self.on_lag is not None and position.modified != _EPOCH:
            try:
                when = datetime.strptime(position.modified[:19], _DATE).timestamp()
                self.on_lag(lineage.entity, max(0.0, time.time() - when))
            except ValueError:
                pass
        return Page(out, self.codec.encode(position), lineage.mode, lineage.tracked)

    # --- waiting -------------------------------------------------------------------------------
    @asynccontextmanager
    async def waiting(self, client: Client) -> AsyncIterator[None]:
        """A slot to wait in: a 429 past the per-client or overall number of waiting feeds."""
        if (
            self._waiting[client.name] >= self.limits.waits_per_client
            or self._waiting_total >= self.limits.waits
        ):
            raise GatewayError(
                "rate-limited",
                "Too many feed requests are waiting (long-polls and event streams): "
                f"at most {self.limits.waits_per_client} per client. Retry later.",
                headers={"Retry-After": str(max(1, int(self.limits.poll_interval)))},
            )
        self._waiting[client.name] += 1
        self._waiting_total += 1
        try:
            yield
        finally:
            self._waiting[client.name] -= 1
            self._waiting_total -= 1

    def check_wait(self, wait: Any) -> float:
        if isinstance(wait, str):
            try:
                wait = float(wait)
            except ValueError:
                raise invalid_request("wait must be a number of seconds.") from None
        if (
            not isinstance(wait, (int, float))
            or isinstance(wait, bool)
            or not 0 <= wait <= self.limits.max_wait
        ):
            raise invalid_request(f"wait must be a number of seconds from 0 to {self.limits.max_wait:g}.")
        return float(wait)

    async def nap(self, entity: str, seconds: float) -> None:
        """Until a write to ``entity`` through this gateway, or ``seconds``."""
        waker = self._wakers[entity.lower()]
        try:
            await asyncio.wait_for(waker.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            pass

    async def poll_waiting(
        self, client: Client, entity: str, cursor: str, query: FeedQuery, wait: float
    ) -> Page:
        """``poll``, looking again every poll interval for up to ``wait`` seconds while nothing
        changed."""
        page = await self.poll(client, entity, cursor, query)
        if page.records or wait <= 0:
            return page
        deadline = self._clock() + wait
        async with self.waiting(client):
            while not page.records:
                left = deadline - self._clock()
                if left <= 0:
                    break
                await self.nap(entity, min(self.limits.poll_interval, left))
                page = await self.poll(client, entity, page.cursor, query)
        return page
