"""A write is never sent twice: the real aiohttp client against real loopback sockets that fail
in each way a connection can, and a chaos proxy that loses a create's answer after CiviCRM ran it.

Nothing here fakes the transport: the classification in ``gateway/backends/httpclient.py``
(nothing sent / sent and timed out / sent and broken) is what decides each outcome below.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.backends.httpclient import Broken, PooledClient, TimedOut, Unreachable
from tests.conftest import TRUSTED_TOKEN, assert_problem, free_port, gateway_client, http_settings, trusted
from tests.production.chaos import ChaosProxy

# Three attempts at most, 1 ms apart; no metadata look-ups (validation off, OpenAPI, and the
# trusted test client, whose calls need none), so every request a fault server sees is the call
# under test.
SETTINGS = {
    "retry_max_attempts": 3,
    "retry_backoff": 0.001,
    "breaker_threshold": 1000,
    "validate_calls": False,
    "http_timeout": 1.0,
}
CREATE = ("/v4/Contact/create", {"contact_type": "Individual", "first_name": "Once"})
READ = ("/v4/Contact/get", {"select": ["id"], "limit": 1})


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class FaultServer:
    """An asyncio server on 127.0.0.1 that fails every connection the same way. ``connections``
    counts the connections accepted, ``requests`` the requests read to their last body byte."""

    fault: str
    port: int = 0
    connections: int = 0
    requests: int = 0

    async def _read_request(self, reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        self.requests += 1

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            if self.fault == "reset-before-send":
                _reset(writer)  # at once: the request is never read
                return
            await self._read_request(reader)
            if self.fault == "reset-after-send":
                _reset(writer)
            elif self.fault == "garbage":
                writer.write(b"\x00\x13this is not HTTP\r\n\r\n\xff\xfe")
                await writer.drain()
                writer.close()
            elif self.fault == "timeout-after-send":
                await reader.read()  # until the client gives up and closes
                writer.close()


@contextlib.asynccontextmanager
async def fault_server(fault: str) -> AsyncIterator[FaultServer]:
    """``refused`` is a free port nobody listens on; the other faults get a live server."""
    state = FaultServer(fault)
    if fault == "refused":
        state.port = free_port()
        yield state
        return
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def retries(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_upstream_retries_total{")
    )


# fault -> (PooledClient's exception, status and problem type the gateway answers,
#           attempts for a create, attempts for a read)
FAULTS: dict[str, tuple[type[Exception], int, str, int, int]] = {
    # Nothing sent: a write is as safe to repeat as a read.
    "refused": (Unreachable, 503, "upstream-unavailable", 3, 3),
    # The client cannot tell whether the request left: taken as sent, a write is not repeated.
    "reset-before-send": (Broken, 502, "upstream-invalid-response", 1, 3),
    "reset-after-send": (Broken, 502, "upstream-invalid-response", 1, 3),
    "garbage": (Broken, 502, "upstream-invalid-response", 1, 3),
    # Sent and unanswered: CiviCRM may still be working on it; nothing is repeated.
    "timeout-after-send": (TimedOut, 504, "upstream-timeout", 1, 1),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_pooled_client_classifies_each_socket_failure(fault: str) -> None:
    expected = FAULTS[fault][0]
    async with fault_server(fault) as server:
        client = PooledClient(
            f"http://127.0.0.1:{server.port}", headers={}, timeout=1.0, connect_timeout=1.0, max_connections=2
        )
        try:
            with pytest.raises(expected) as raised:
                await client.post("civicrm/ajax/api4/Contact/create", b"params=%7B%7D")
        finally:
            await client.close()
    assert type(raised.value) is expected
    if fault != "refused":
        assert server.connections == 1


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("call", ["create", "read"])
async def test_gateway_retries_only_what_cannot_have_run(fault: str, call: str) -> None:
    """Through the gateway over HTTP: the status and problem type, and how many times the
    request reached the socket (a retry is one more connection: each one was broken)."""
    _, status, slug, create_attempts, read_attempts = FAULTS[fault]
    attempts = create_attempts if call == "create" else read_attempts
    path, body = CREATE if call == "create" else READ
    async with fault_server(fault) as server:
        settings = http_settings(f"http://127.0.0.1:{server.port}", **SETTINGS)
        async with gateway_client(trusted(settings), token=TRUSTED_TOKEN) as gw:
            response = await gw.post(path, json=body)
            metrics = (await gw.get("/metrics")).text
    assert_problem(response, status, slug)
    assert retries(metrics) == attempts - 1
    if fault == "refused":
        return  # nothing listens: the retry counter is the only witness
    assert server.connections == attempts
    expected_requests = 0 if fault == "reset-before-send" else attempts
    assert server.requests == expected_requests


def contacts_named(sandbox: Any, name: str) -> list[int]:
    rows = sandbox.api4(
        "Contact", "get", {"select": ["id"], "where": [["first_name", "=", name]]}, check_permissions=False
    )["values"]
    return [row["id"] for row in rows]


@pytest.mark.parametrize(
    ("mode", "status", "slug"),
    [
        ("cut-answer", 502, "upstream-invalid-response"),
        ("drop-answer", 504, "upstream-timeout"),
    ],
)
async def test_create_whose_answer_is_lost_runs_once(
    upstream: Any, mode: str, status: int, slug: str
) -> None:
    """The proxy forwards the create, CiviCRM runs it, and the answer never arrives: the
    gateway says so and does not send the create again."""
    proxy = ChaosProxy(upstream.server.port).start()
    try:
        proxy.set(mode)
        settings = http_settings(proxy.url, **SETTINGS)
        name = f"Lost-{mode}"
        async with gateway_client(trusted(settings), token=TRUSTED_TOKEN) as gw:
            response = await gw.post(
                "/v4/Contact/create", json={"contact_type": "Individual", "first_name": name}
            )
            metrics = (await gw.get("/metrics")).text
    finally:
        proxy.stop()
    assert len(contacts_named(upstream.sandbox, name)) == 1
    assert proxy.forwarded == 1
    assert retries(metrics) == 0
    assert_problem(response, status, slug)
