"""``civicrm-gateway export --url``: the same export, through a running gateway.

For a user on another machine, or to read exactly the data a running gateway serves. One
streamed ``POST /v4/{entity}/get`` with ``Accept: application/x-ndjson`` (or ``text/csv``): the
gateway pages through CiviCRM itself and the body is written out as it arrives, so memory stays
flat. The client token goes in the ``Authorization`` header, never on the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

import aiohttp
import orjson

from gateway.flow.export import MEDIA_TYPES


class RemoteExportError(Exception):
    """The gateway refused or failed the export; the message is its problem title and detail."""


class _RowCounter:
    """Counts records in an NDJSON or CSV byte stream (CSV: newlines outside quotes, less the
    header), across chunk boundaries."""

    def __init__(self, fmt: str) -> None:
        self.csv = fmt == "csv"
        self.quoted = False
        self.lines = 0

    def feed(self, chunk: bytes) -> int:
        if not self.csv:
            return chunk.count(b"\n")
        before = self.lines
        for part_index, part in enumerate(chunk.split(b'"')):
            if part_index:
                self.quoted = not self.quoted
            if not self.quoted:
                self.lines += part.count(b"\n")
        header = 1 if before == 0 and self.lines > 0 else 0
        return self.lines - before - header


def _problem(status: int, body: bytes) -> str:
    try:
        problem = orjson.loads(body)
        return f"{problem['title']}: {problem['detail']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"


async def export_via_gateway(
    url: str,
    token: str | None,
    entity: str,
    params: dict[str, Any],
    fmt: str,
    out: BinaryIO,
    *,
    on_rows: Callable[[int], None],
    want_total: bool = False,
    on_total: Callable[[int | None], None] | None = None,
    read_timeout: float = 300.0,
) -> None:
    """Stream ``entity.get`` with ``params`` from the gateway at ``url`` into ``out``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = f"{url.rstrip('/')}/v4/{entity}/get"
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout)
    async with aiohttp.ClientSession(headers=headers, timeout=client_timeout) as session:
        if want_total and on_total is not None:
            counting = {k: v for k, v in params.items() if k in ("where", "join")}
            async with session.post(endpoint, json={**counting, "select": ["row_count"]}) as resp:
                total = resp.headers.get("X-Total-Count") if resp.status == 200 else None
                limit = params.get("limit") or 0
                on_total(min(int(total), limit) if total and limit else int(total) if total else None)
        accept = MEDIA_TYPES[fmt].split(";")[0]
        async with session.post(endpoint, json=params, headers={"Accept": accept}) as resp:
            if resp.status != 200:
                message = _problem(resp.status, await resp.read())
                if resp.status == 401:
                    message += " (the CLI sends CIVI_GATEWAY_TOKEN, or the --token-file)"
                raise RemoteExportError(message)
            counter = _RowCounter(fmt)
            async for chunk in resp.content.iter_any():
                out.write(chunk)  # a local file: short blocking writes are fine in a CLI
                on_rows(counter.feed(chunk))
