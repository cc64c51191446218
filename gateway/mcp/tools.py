"""What each MCP tool does: the metadata questions answered from the OpenAPI metadata cache
narrowed to the client's policy, and every call handed to the call flow as a
:class:`~gateway.flow.request.CallRequest` (face ``mcp``), so that it is parsed, checked,
limited, made idempotent and audited exactly as the same call sent to the REST routes.

A refusal becomes an MCP tool error whose text carries the very problem as JSON (type,
title, status, detail) the REST route answers, and whose text says it in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import jsonschema
import orjson
from mcp import types

from gateway.core.errors import GatewayError, invalid_request
from gateway.core.params import check_depth
from gateway.core.redact import REDACTOR
from gateway.flow.clients import Client
from gateway.flow.flow import CallFlow
from gateway.flow.outcome import Answer, problem_body
from gateway.flow.request import CallRequest, Credentials, Origin, given
from gateway.mcp.schemas import BY_NAME, DEFAULT_LIMIT, TOOLS, ToolSpec

log = logging.getLogger("gateway.mcp")

# The entities (CiviCRM's metadata as the OpenAPI documents have it) a client may see, each
# with only the actions and fields its policy lets it use; None when the metadata is missing.
Catalogue = Callable[[Client], Awaitable[list[dict[str, Any]] | None]]
# Options shown per field by describe_entity (a country list is ~250).
MAX_OPTIONS = 300
_VALIDATORS = {spec.name: jsonschema.Draft202012Validator(spec.input) for spec in TOOLS}


def _actions(entity: dict[str, Any]) -> list[str]:
    return [a["name"] for a in entity.get("actions") or [] if isinstance(a, dict)]


def _offering(entities: list[dict[str, Any]], action: str) -> list[str]:
    return sorted(e["name"] for e in entities if action in _actions(e))


class Tools:
    """The tools of one app, on its call flow and metadata."""

    def __init__(self, flow: CallFlow, catalogue: Catalogue, *, max_depth: int) -> None:
        self.flow = flow
        self.catalogue = catalogue
        self.max_depth = max_depth

    # --- listing -------------------------------------------------------------------------
    async def listed(self, client: Client) -> list[types.Tool]:
        """The tools ``client`` may use: the read tools always, a write tool only when its
        policy lets it make that write on some entity. The entity each tool takes is
        narrowed to those it may use it on."""
        entities = await self.catalogue(client)
        tools = []
        for spec in TOOLS:
            action = spec.action or "get"
            if entities is None:
                # No metadata (CiviCRM unreachable so far): the policy alone decides
                if spec.writes and client.policy.read_only:
                    continue
                tools.append(spec.tool(None))
                continue
            names = _offering(entities, action)
            if spec.writes and not names:
                continue
            tools.append(spec.tool(names))
        return tools

    # --- one tool call -------------------------------------------------------------------
    async def run(
        self, name: str, arguments: dict[str, Any], credentials: Credentials, origin: Origin
    ) -> types.CallToolResult:
        """The tool's result, or its refusal as a tool error."""
        origin = replace(origin, instance=f"/mcp/tools/{name[:64]}")
        try:
            spec = BY_NAME.get(name)
            if spec is None:
                raise invalid_request(f"No tool {name[:64]!r}; tools/list says which this client may use.")
            self._check(spec, arguments)
            structured, text = await self._run(spec, arguments, credentials, origin)
        except GatewayError as exc:
            if exc.status >= 500:
                log.warning("MCP %s: %s: %s", name[:64], exc.slug, exc.detail)
            return error_result(orjson.loads(problem_body(exc, origin.instance)))
        except _Replayed as replayed:
            return error_result(replayed.problem)
        except Exception:
            log.exception("MCP %s: unexpected failure", name[:64])
            error = GatewayError("internal-error", "Unexpected failure; see the gateway's log.")
            return error_result(error.body(origin.instance))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structuredContent=structured
        )

    def _check(self, spec: ToolSpec, arguments: dict[str, Any]) -> None:
        check_depth(arguments, self.max_depth)
        error = jsonschema.exceptions.best_match(_VALIDATORS[spec.name].iter_errors(arguments))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
            raise invalid_request(f"{spec.name}: {where + ': ' if where else ''}{message}")

    async def _run(
        self, spec: ToolSpec, args: dict[str, Any], credentials: Credentials, origin: Origin
    ) -> tuple[dict[str, Any], str]:
        if spec.name == "list_entities":
            return await self._list_entities(await self.flow.authenticate(credentials))
        if spec.name == "describe_entity":
            return await self._describe(await self.flow.authenticate(credentials), args["entity"])
        entity: str = args["entity"]
        if spec.name == "get_records":
            params: dict[str, Any] = {"limit": args.get("limit", DEFAULT_LIMIT)}
            for key in ("select", "where", "orderBy", "offset"):
                if key in args:
                    params[key] = args[key]
            answer = await self._call(entity, "get", params, credentials, origin)
            records = _records(answer)
            total = answer.headers.get("X-Total-Count")
            structured = {
                "entity": entity,
                "records": records,
                "count": len(records),
                "total": int(total) if total is not None else None,
            }
            return structured, _summary(f"{len(records)} {entity} record(s)", structured)
        if spec.name == "count_records":
            params = {"select": ["row_count"], "where": args.get("where", [])}
            answer = await self._call(entity, "get", params, credentials, origin)
            _records(answer)
            count = int(answer.headers.get("X-Total-Count", "0"))
            return {"entity": entity, "count": count}, f"{count} {entity} record(s) match."
        return await self._write(spec, args, credentials, origin)

    async def _call(
        self, entity: str, action: str, params: dict[str, Any], credentials: Credentials, origin: Origin
    ) -> Answer:
        return await self.flow.call(CallRequest(4, entity, action, given(params), credentials, origin))

    async def _write(
        self, spec: ToolSpec, args: dict[str, Any], credentials: Credentials, origin: Origin
    ) -> tuple[dict[str, Any], str]:
        assert spec.action is not None
        entity: str = args["entity"]
        params = {key: args[key] for key in ("values", "where") if key in args}
        if args.get("dry_run"):
            # The same preparation as the call (names, validation, the policy), nothing sent
            client = await self.flow.authenticate(credentials)
            await self.flow.prepare(client, 4, entity, spec.action, params)
            structured = {"entity": entity, "action": spec.action, "dry_run": True}
            return structured, f"Dry run: {entity}.{spec.action} passes every check; nothing was sent."
        origin = replace(origin, idempotency_key=args.get("idempotency_key"))
        answer = await self._call(entity, spec.action, params, credentials, origin)
        records = _records(answer)
        structured = {
            "entity": entity,
            "action": spec.action,
            "dry_run": False,
            "records": records,
            "count": len(records),
            "replayed": answer.replayed,
        }
        done = {"create": "created", "update": "updated", "delete": "deleted"}[spec.action]
        replayed = (
            " (repeated answer of an earlier call with this idempotency_key)" if answer.replayed else ""
        )
        return structured, _summary(f"{len(records)} {entity} record(s) {done}{replayed}", structured)

    # --- metadata ------------------------------------------------------------------------
    async def _visible(self, client: Client) -> list[dict[str, Any]]:
        entities = await self.catalogue(client)
        if entities is None:
            raise GatewayError(
                "upstream-unavailable", "CiviCRM's metadata is not available yet; try again in a moment."
            )
        return [e for e in entities if "get" in _actions(e)]

    async def _list_entities(self, client: Client) -> tuple[dict[str, Any], str]:
        listed = [
            {
                "name": e["name"],
                "title": e.get("title"),
                "description": e.get("description"),
                "actions": _actions(e),
            }
            for e in await self._visible(client)
        ]
        structured: dict[str, Any] = REDACTOR.json({"entities": listed})
        names = ", ".join(e["name"] for e in listed)
        return structured, f"{len(listed)} entities: {names}" if listed else "No entity may be read."

    async def _describe(self, client: Client, name: str) -> tuple[dict[str, Any], str]:
        found = next((e for e in await self._visible(client) if e["name"].lower() == name.lower()), None)
        if found is None:
            # the same answer whether the entity does not exist or is not this client's
            raise GatewayError(
                "gateway-policy-denied", f"No entity {name[:64]!r} among those this client may read."
            )
        by_action = found.get("fields") or {}
        secrets = not client.policy.credential_fields
        fields: dict[str, dict[str, Any]] = {}
        for action in ("get", "create"):
            for f in by_action.get(action) or []:
                if secrets and str(f.get("input_type") or "").lower() == "password":
                    continue
                entry = fields.get(f["name"])
                if entry is None:
                    entry = fields[f["name"]] = _field(f)
                if action == "create":
                    entry["required_on_create"] = bool(f.get("required")) and f.get("default_value") is None
        structured: dict[str, Any] = REDACTOR.json(
            {
                "entity": found["name"],
                "title": found.get("title"),
                "description": found.get("description"),
                "actions": _actions(found),
                "fields": list(fields.values()),
            }
        )
        return structured, _summary(f"{found['name']}: {len(fields)} field(s)", structured)


def _field(f: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f["name"],
        "type": f.get("data_type"),
        "title": f.get("title") or f.get("label"),
        "description": f.get("description"),
        "required_on_create": False,
    }
    if f.get("fk_entity"):
        out["fk_entity"] = f["fk_entity"]
    if f.get("readonly"):
        out["readonly"] = True
    options = _options(f.get("options"))
    if options is not None:
        out["options"] = options[:MAX_OPTIONS]
        if len(options) > MAX_OPTIONS:
            out["options_truncated"] = True
    return out


def _options(raw: Any) -> list[dict[str, Any]] | None:
    """A pseudoconstant field's options as ``{id, name, label}`` records (getFields gives a
    list of records, or an id -> label map)."""
    if isinstance(raw, dict):
        return [{"id": k, "label": v} for k, v in raw.items()]
    if isinstance(raw, list) and raw:
        keep = ("id", "name", "label")
        return [
            {k: item[k] for k in keep if k in item} if isinstance(item, dict) else {"id": item}
            for item in raw
        ]
    return None


class _Replayed(Exception):
    """An Idempotency-Key's earlier answer, which was a refusal: answered again as it was."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail"))
        self.problem = problem


def _records(answer: Answer) -> list[Any]:
    """The answer's records (a replayed answer holds only its encoded body)."""
    if answer.status >= 400:
        raise _Replayed(orjson.loads(answer.body or b"{}"))
    value = answer.value if answer.value is not None else orjson.loads(answer.body or b"[]")
    return value if isinstance(value, list) else [value]


def _summary(line: str, structured: dict[str, Any]) -> str:
    """The one-line summary, then the structured content as JSON for clients that read text
    only (as the MCP specification recommends)."""
    return line + "\n" + orjson.dumps(structured).decode()


def error_result(problem: dict[str, Any]) -> types.CallToolResult:
    """A tool error carrying the REST route's problem (type, title, status, detail, instance):
    a one-line summary, then the problem as JSON. Not as structured content: a tool's output
    schema describes its results, and strict clients (the MCP Inspector) check an error's
    structured content against it too."""
    line = (
        f"{problem.get('title')} ({problem.get('status')}): {problem.get('detail')} [{problem.get('type')}]"
    )
    text = line + "\n" + orjson.dumps(problem).decode()
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)
