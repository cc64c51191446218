"""CiviCRM's own metadata, as the OpenAPI document needs it: entities, their actions, their fields.

Fetched through the :class:`~gateway.backends.base.Backend` interface with the gateway's own
credentials (``Entity.get``, then ``{Entity}.getActions`` and ``{Entity}.getFields`` for each
entity), cached with a TTL by :class:`SpecSource`, and savable to / loadable from a local
JSON *spec file* (like Civis' ``local_api_spec``) so the gateway can document CiviCRM without
reaching it.

The spec file is plain JSON::

    {"format": "civicrm-gateway-spec/1", "fetched_at": "...", "source": "http backend",
     "entities": [{"name": "Contact", "title": "Contact", "description": "...",
                   "type": ["DAOEntity"], "primary_key": ["id"],
                   "actions": [{"name": "get", "description": "...", "params": {}}],
                   "fields": {"get": [{...getFields record...}], "create": [...]}}]}

``fields`` is keyed by the action the fields were asked for (``getFields`` with ``action``):
``get`` describes records and filters, ``create`` the values a record takes. Other actions
reuse those two. They are asked as chains of one ``Entity.get`` per group of entities (see
:func:`fetch_metadata`), so a site of 150 entities costs 1 + 15 calls, not 1 + 3 x 150.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.backends.base import Backend
from gateway.backends.warmup import background_backend
from gateway.core.call import OwnCall
from gateway.core.errors import GatewayError

log = logging.getLogger("gateway.web.openapi")

SPEC_FORMAT = "civicrm-gateway-spec/1"
DEFAULT_TTL = 3600.0
# How many metadata calls run at once against CiviCRM (one Entity.get, then 3 per entity):
# enough to finish a real site in seconds, few enough not to crowd out clients' calls.
FETCH_CONCURRENCY = 6
# Entities described by one chained Entity.get: few enough that the groups spread over the
# workers that run them, many enough that a group's round trip is worth it.
GROUP_SIZE = 10
# getFields is asked for these actions; every other action reuses one of them.
FIELD_ACTIONS = ("get", "create")
ENTITY_SELECT = ["name", "title", "title_plural", "description", "type", "primary_key", "icon", "label_field"]
FIELD_SELECT = [
    "name",
    "title",
    "label",
    "description",
    "type",
    "data_type",
    "input_type",
    "required",
    "default_value",
    "nullable",
    "readonly",
    "options",
    "fk_entity",
    "custom_group",
    "serialize",
]


class MetadataError(Exception):
    """The metadata could not be fetched or loaded; the message says why."""


@dataclass
class Metadata:
    """Entities with their actions and fields (see the module docstring for the shape)."""

    entities: list[dict[str, Any]]
    source: str = "backend"
    fetched_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "fetched_at": self.fetched_at,
            "source": self.source,
            "problems": self.problems,
            "entities": self.entities,
        }

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> Metadata:
        if not isinstance(data, dict) or not isinstance(data.get("entities"), list):
            raise MetadataError(f"{source}: not a civicrm-gateway spec (no 'entities' list)")
        if data.get("format", SPEC_FORMAT) != SPEC_FORMAT:
            raise MetadataError(f"{source}: unsupported spec format {data.get('format')!r}")
        entities = []
        for ent in data["entities"]:
            if not isinstance(ent, dict) or not isinstance(ent.get("name"), str):
                raise MetadataError(f"{source}: every entity needs a 'name'")
            if not isinstance(ent.setdefault("actions", []), list) or not isinstance(
                ent.setdefault("fields", {}), dict
            ):
                raise MetadataError(
                    f"{source}: {ent['name']}: 'actions' must be a list and 'fields' an object"
                )
            entities.append(ent)
        return cls(
            entities,
            source=source,
            fetched_at=str(data.get("fetched_at") or ""),
            problems=[str(p) for p in data.get("problems") or []],
        )

    def entity(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.entities if e["name"] == name), None)

    def only(self, names: Collection[str]) -> Metadata:
        """The same metadata restricted to ``names`` (all entities when empty)."""
        if not names:
            return self
        wanted = set(names)
        return Metadata(
            [e for e in self.entities if e["name"] in wanted],
            source=self.source,
            fetched_at=self.fetched_at,
            problems=self.problems,
        )


# --- fetching --------------------------------------------------------------------------------


def _action_names(actions: list[dict[str, Any]]) -> set[str]:
    return {a["name"] for a in actions if isinstance(a, dict) and isinstance(a.get("name"), str)}


async def _ask(backend: Backend, entity: str, action: str, params: dict[str, Any]) -> list[Any]:
    """This module's one backend call: APIv4, as the gateway's own identity."""
    return list(await backend.call(OwnCall(4, entity, action, params=params)))


def _actions_params() -> dict[str, Any]:
    # Not "params": the documents do not use it, and it is most of the answer's bytes and
    # CiviCRM's time (5 MB, ~1.4 s of the real site's 145 entities).
    return {"select": ["name", "description"]}


def _fields_params(action: str, *, options: bool = True) -> dict[str, Any]:
    return {"action": action, "loadOptions": options, "select": FIELD_SELECT}


def _borrow_options(ent: dict[str, Any]) -> list[str]:
    """Give ``ent``'s create fields (asked without their options: loading them is a quarter of
    CiviCRM's time) the option lists of the same get fields; the names of those it could not
    (only the create side has the list), to ask for."""
    fields = ent.get("fields") or {}
    lists = {
        f["name"]: f["options"] for f in fields.get("get", []) if isinstance(f.get("options"), dict | list)
    }
    missing = []
    for found in fields.get("create", []):
        if found.get("options") is True:  # has options, not loaded
            if found["name"] in lists:
                found["options"] = lists[found["name"]]
            else:
                missing.append(found["name"])
    return missing


# Keys of the chained calls in a group's Entity.get (see fetch_metadata).
_CHAIN = {"actions": ("getActions", None), **{f"fields_{a}": ("getFields", a) for a in FIELD_ACTIONS}}


def _chain() -> dict[str, list[Any]]:
    return {
        key: [
            "$name",
            action,
            _fields_params(fields, options=fields == "get") if fields else _actions_params(),
        ]
        for key, (action, fields) in _CHAIN.items()
    }


def _described(ent: dict[str, Any], actions: list[Any] | None, fields: dict[str, list[Any] | None]) -> None:
    """Fill ``ent``'s actions and fields (those of the actions it has) from the answers."""
    ent["actions"] = [a for a in actions or [] if isinstance(a, dict) and "name" in a]
    available = _action_names(ent["actions"])
    ent["fields"] = {
        action: [f for f in found if isinstance(f, dict) and "name" in f]
        for action, found in fields.items()
        if found is not None and action in available
    }


Described = Callable[[list[dict[str, Any]]], None]


async def fetch_metadata(
    backend: Backend,
    *,
    entities: Collection[str] = (),
    concurrency: int = FETCH_CONCURRENCY,
    group_size: int = GROUP_SIZE,
    on_described: Described | None = None,
    backend_ready: asyncio.Event | None = None,
    closing: set[asyncio.Task[None]] | None = None,
) -> Metadata:
    """Ask CiviCRM (through ``backend``) for every entity (or only ``entities``), its actions
    and its fields.

    ``Entity.get`` lists the entities; then each group of ``group_size`` entities is one
    ``Entity.get`` chaining their ``getActions`` and ``getFields`` (one round trip and one
    CiviCRM request for a group, where a call each cost ~30 ms of bootstrap over REST and a
    process over cv), the groups ``concurrency`` at a time. On cv and pipe the groups run on
    a low-priority pool of their own (:func:`gateway.backends.warmup.background_backend`).
    A group CiviCRM refuses (or a backend that does not chain) is asked one call at a time.

    ``on_described`` is told of each group's entities as soon as they are described (their
    dicts are final then), for work that can begin before the whole site is in. With
    ``backend_ready`` (an event set once ``backend`` has started), the fetch may begin before:
    on cv and pipe every call runs on the warm-up's own workers, and ``backend`` itself is
    asked only once the event is set. With ``closing``, the warm-up's own workers are stopped
    in a task put there, not waited for.

    Raises :class:`MetadataError` when ``Entity.get`` itself fails; a failure for one entity's
    actions or fields is recorded in ``problems`` and that entity is documented without them.
    """
    async with background_backend(backend, closing=closing) as (worker, workers):
        if worker is backend and backend_ready is not None:
            await backend_ready.wait()
        try:
            found = await _ask(worker, "Entity", "get", {"select": ENTITY_SELECT})
        except GatewayError as exc:
            raise MetadataError(f"Entity.get failed: {exc.problem.title}: {exc.detail}") from None
        return await _describe_all(worker, workers or concurrency, found, entities, group_size, on_described)


async def _describe_all(
    backend: Backend,
    concurrency: int,
    found: list[Any],
    entities: Collection[str],
    group_size: int,
    on_described: Described | None,
) -> Metadata:
    found = [e for e in found if isinstance(e, dict) and isinstance(e.get("name"), str)]
    if entities:
        found = [e for e in found if e["name"] in set(entities)]
    if not found:
        raise MetadataError("Entity.get answered no entities" + (" of those configured" if entities else ""))
    limiter = asyncio.Semaphore(concurrency)
    problems: list[str] = []
    chaining = True  # until a backend shows it does not chain

    async def call(entity: str, action: str, params: dict[str, Any]) -> list[Any] | None:
        async with limiter:
            try:
                return await _ask(backend, entity, action, params)
            except GatewayError as exc:
                problems.append(f"{entity}.{action}: {exc.problem.title}: {exc.detail}"[:300])
                return None

    async def describe(ent: dict[str, Any]) -> dict[str, Any]:
        name = ent["name"]
        actions = await call(name, "getActions", _actions_params())
        wanted = [a for a in FIELD_ACTIONS if a in _action_names(actions or [])]
        answers = await asyncio.gather(*(call(name, "getFields", _fields_params(a)) for a in wanted))
        _described(ent, actions, dict(zip(wanted, answers, strict=True)))
        return ent

    async def load_options(ent: dict[str, Any], names: list[str]) -> None:
        """The option lists of create fields no get field had (rare: Payment's two)."""
        if not names:
            return
        params = {**_fields_params("create"), "where": [["name", "IN", names]]}
        loaded = {f.get("name"): f for f in await call(ent["name"], "getFields", params) or []}
        for found in ent["fields"].get("create", []):
            if found["name"] in names and isinstance(loaded.get(found["name"]), dict):
                found["options"] = loaded[found["name"]].get("options")

    def landed(ents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if on_described is not None:
            try:
                on_described(ents)
            except Exception:  # work ahead only: the fetch goes on without it
                log.exception("OpenAPI: acting on described entities failed")
        return ents

    async def group(ents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return landed(await describe_group(ents))

    async def describe_group(ents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal chaining
        if chaining:
            names = [e["name"] for e in ents]
            params = {"select": ["name"], "where": [["name", "IN", names]], "chain": _chain()}
            rows: list[Any] | None = None
            async with limiter:
                try:
                    rows = await _ask(backend, "Entity", "get", params)
                except GatewayError as exc:
                    # unknown-api: a backend that takes "$name" for an entity (no chaining);
                    # anything else: one of the group's calls failed, asked one by one below
                    chaining = chaining and exc.slug != "unknown-api"
            by_name = {r.get("name"): r for r in rows or [] if isinstance(r, dict)}
            if rows is not None and all(isinstance(by_name.get(n), dict) for n in names):
                if all(all(k in by_name[n] for k in _CHAIN) for n in names):
                    for ent in ents:
                        row = by_name[ent["name"]]
                        fields = {a: row[f"fields_{a}"] for a in FIELD_ACTIONS}
                        _described(
                            ent,
                            row["actions"],
                            {a: v if isinstance(v, list) else None for a, v in fields.items()},
                        )
                    await asyncio.gather(*(load_options(e, _borrow_options(e)) for e in ents))
                    return ents
                chaining = False  # answered, but without the chained calls
        return list(await asyncio.gather(*(describe(e) for e in ents)))

    copies = [dict(e) for e in found]
    groups = [copies[i : i + group_size] for i in range(0, len(copies), group_size)]
    described = [e for part in await asyncio.gather(*(group(g) for g in groups)) for e in part]
    described.sort(key=lambda e: e["name"])
    return Metadata(described, source=f"{backend.name} backend", problems=sorted(problems))


# --- spec files ------------------------------------------------------------------------------


def load_spec(path: str | os.PathLike[str]) -> Metadata:
    """Metadata from a spec file written by :func:`save_spec` (or by hand)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MetadataError(f"cannot read spec file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise MetadataError(f"spec file {path} is not valid JSON: {exc}") from None
    return Metadata.from_json(data, source=f"spec file {path.name}")


def save_spec(
    metadata: Metadata, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None
) -> None:
    """Write ``metadata`` as a spec file, atomically (a reader never sees half a file);
    ``extra`` keys are written beside the metadata's own."""
    text = json.dumps({**metadata.to_json(), **(extra or {})}, indent=1, ensure_ascii=False)
    _write_atomic(Path(path), (text + "\n").encode())


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".spec-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # metadata, not a secret: readable like any config file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the cache -------------------------------------------------------------------------------

Fetcher = Callable[[Backend], Awaitable[Metadata]]


class SpecSource:
    """Metadata fetched once and kept for ``ttl`` seconds (``ttl <= 0``: kept forever).

    With a ``spec_file`` the metadata comes from that file only and the backend is never asked.
    Otherwise a fetch runs as a task of its own, shared by every concurrent caller; a caller
    waits for the first fetch at most ``wait`` seconds, so a slow CiviCRM never holds a
    request for long. Stale metadata is served at once while a refresh runs in the background;
    a failed refresh keeps the older metadata, and after a failure the backend is asked again
    no sooner than ``retry_after`` seconds later.
    """

    def __init__(
        self,
        backend: Backend | None,
        *,
        ttl: float = DEFAULT_TTL,
        spec_file: str | os.PathLike[str] | None = None,
        entities: Collection[str] = (),
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        fetch: Fetcher | None = None,
        cache_file: str | os.PathLike[str] | None = None,
        site: str = "",
    ) -> None:
        self.backend = backend
        self.ttl = ttl
        self.spec_file = Path(spec_file) if spec_file else None
        self.entities = tuple(entities)
        self.retry_after = retry_after
        self._clock = clock
        # Told of each group of entities as it lands (see fetch_metadata), and set once the
        # backend has started (the fetch may begin before): both set by the documents' owner.
        self.on_described: Described | None = None
        self.backend_ready: asyncio.Event | None = None
        self._fetch: Fetcher = fetch or (
            lambda b: fetch_metadata(
                b,
                entities=self.entities,
                on_described=self.on_described,
                backend_ready=self.backend_ready,
                closing=self._closing,
            )
        )
        self.metadata: Metadata | None = None
        self.error: str | None = None
        self._loaded_at = 0.0
        self._failed_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.fetches = 0  # how many times the backend was asked (for logs and tests)
        self.cache_file = Path(cache_file) if cache_file else None
        self.site = site
        self._disk_tried = False
        self._stale = False  # loaded from the cache file: serve it, but fetch anew
        self._saving: asyncio.Future[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # the warm-up's workers, being stopped

    def _fresh(self) -> bool:
        return (
            self.metadata is not None
            and not self._stale
            and (self.ttl <= 0 or self._clock() - self._loaded_at < self.ttl)
        )

    def _failed_recently(self) -> bool:
        return self._failed_at is not None and self._clock() - self._failed_at < self.retry_after

    async def get(self, wait: float | None = 15.0) -> Metadata | None:
        """The metadata, fetching it when missing or stale; ``None`` if there is none yet
        (then :attr:`error` says why)."""
        if self.spec_file is not None:
            if not self._fresh() and not self._failed_recently():
                self._load_file()
            return self.metadata
        if self._fresh():
            return self.metadata
        if self.metadata is None and not self._disk_tried:
            self._load_cache()
        if self.backend is None:
            self.error = "no backend to fetch metadata from"
            return self.metadata
        if self._task is None:
            if self._failed_recently():
                return self.metadata
            self._task = asyncio.get_running_loop().create_task(self._run())
        if self.metadata is not None:  # stale: serve it, the refresh finishes on its own
            return self.metadata
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=wait)
        except TimeoutError:
            self.error = "CiviCRM's metadata is still being fetched; reload in a moment"
        return self.metadata

    async def close(self) -> None:
        """Stop a fetch still running (at shutdown); a copy being saved and the warm-up's
        workers being stopped are waited for."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pending = [*([self._saving] if self._saving is not None else []), *self._closing]
        if pending:
            await asyncio.shield(asyncio.gather(*pending, return_exceptions=True))

    async def _run(self) -> None:
        """One fetch; never raises, so nobody has to collect the task's exception."""
        self.fetches += 1
        started = self._clock()
        try:
            assert self.backend is not None
            metadata = await self._fetch(self.backend)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, MetadataError) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "OpenAPI: cannot fetch CiviCRM's metadata (%s); documenting the generic routes only", reason
            )
            self.error = reason
            self._failed_at = self._clock()
            return
        finally:
            self._task = None
        self.metadata, self.error, self._failed_at = metadata, None, None
        self._loaded_at, self._stale = self._clock(), False
        if self.cache_file is not None:  # in a thread: the documents are waiting to be built
            self._saving = asyncio.get_running_loop().run_in_executor(None, self._save_cache, metadata)
        log.info(
            "OpenAPI: fetched metadata of %d entities in %.1fs%s",
            len(metadata.entities),
            self._loaded_at - started,
            f" ({len(metadata.problems)} calls failed)" if metadata.problems else "",
        )

    def _load_cache(self) -> None:
        """The metadata a previous run saved, if it describes the same site (served as stale:
        the caller starts a refresh)."""
        self._disk_tried = True
        if self.cache_file is None or not self.cache_file.is_file():
            return
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("site") != self.site:
                return
            metadata = Metadata.from_json(data, source=f"{data.get('source')}, saved")
        except (OSError, ValueError, MetadataError) as exc:
            log.warning("OpenAPI: ignoring the metadata cache %s (%s)", self.cache_file, exc)
            return
        self.metadata = metadata.only(self.entities)
        self._loaded_at = self._clock()
        self._stale = True
        log.info(
            "OpenAPI: metadata of %d entities from %s (fetched %s); refreshing",
            len(metadata.entities),
            self.cache_file,
            metadata.fetched_at,
        )

    def _save_cache(self, metadata: Metadata) -> None:
        if self.cache_file is None:
            return
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            # Compact, and with orjson: a large site's is megabytes, no one reads it but us.
            _write_atomic(self.cache_file, orjson.dumps({**metadata.to_json(), "site": self.site}))
        except (OSError, TypeError, orjson.JSONEncodeError) as exc:
            log.warning("OpenAPI: cannot save the metadata cache %s (%s)", self.cache_file, exc)

    def _load_file(self) -> None:
        assert self.spec_file is not None
        try:
            metadata = load_spec(self.spec_file).only(self.entities)
        except MetadataError as exc:
            log.warning("OpenAPI: %s; documenting the generic routes only", exc)
            self.error = str(exc)
            self._failed_at = self._clock()
            return
        self.metadata, self.error, self._failed_at = metadata, None, None
        self._loaded_at = self._clock()
