"""Hostile names and bodies sent as raw bytes to a real uvicorn process, whose URL parsing
(percent-decoding, ``..`` segments, NUL) differs from the ASGI test client's: every request gets
a 4xx and the data are left exactly as they were."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess

pytestmark = pytest.mark.slow

CREATE = b'{"contact_type": "Individual", "first_name": "Evil"}'

RAW_PATHS = [
    "/v4/Contact%2Fcreate/x",
    "/v4/Contact%2fcreate",
    "/v4/..%2F..%2Fetc/create",
    "/v4/../v4/Contact/create",
    "/v4/Contact/../Contact/create",
    "/v4/Contact/%2E%2E/create",
    "/v4/%2E%2E/Contact/create",
    "/v4/Contact%00/create",
    "/v4/Contact/create%00",
    "/v4/Contact/create%00.json",
    "/v4/Contact%3Bid/create",
    "/v4/Contact;id/create",
    "/v4/$(id)/create",
    "/v4/%24%28id%29/create",
    "/v4/Contact/`id`",
    "/v4/Contact|id/create",
    "/v4/Contact%7Cid/create",
    "/v4/Contact&&id/create",
    "/v4/Contact%0Aid/create",
    "/v4/Contact%0D%0AX-Injected:%201/create",
    "/v4/Contact%20/create",
    "/v4/Contact/create%20",
    "/v4/%E4%B8%AD/create",
    "/v4/%FF%FE/create",
    "/v4/" + "A" * 4000 + "/create",
    "/v4/Contact/" + "c" * 4000,
    "/v4//Contact/create",
    "/v4/Contact//create",
    "/v4/Contact/create/",
    "/v4/Contact/create/../create",
    "/v3/Contact/create%2F..%2Fdelete",
    "/v4/Contact\\create",
    "/v4/Contact%5Ccreate",
]


def raw_request(
    port: int, method: str, target: str, body: bytes = b"", headers: tuple[str, ...] = ()
) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side normalisation); the status and the body."""
    head = [
        f"{method} {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess({"CIVI_GATEWAY_SANDBOX_DEMO": "10"}, tmp_path_factory.mktemp("hostile"))
    proc.wait_ready()
    yield proc
    log = proc.stop()
    assert "Traceback" not in log, log[-4000:]


def snapshot(gateway: GatewayProcess) -> Any:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        return {
            entity: client.post(f"/v4/{entity}/get", json={"select": ["*"], "orderBy": {"id": "ASC"}}).json()
            for entity in ("Contact", "Email", "Phone", "Address", "Group", "Tag")
        }


@pytest.fixture
def unchanged(gateway: GatewayProcess) -> Iterator[None]:
    before = snapshot(gateway)
    assert before["Contact"], "demo data missing"
    yield
    assert snapshot(gateway) == before


@pytest.mark.parametrize("target", RAW_PATHS, ids=range(len(RAW_PATHS)))
def test_hostile_paths(gateway: GatewayProcess, unchanged: None, target: str) -> None:
    status, body = raw_request(gateway.port, "POST", target, CREATE)
    assert 400 <= status < 500, (status, body[:300])
    assert b"Evil" not in body


@pytest.mark.parametrize(
    "body",
    [
        b'{"values": {"first_name": 1e999999}}',
        b'{"values": {"first_name": "x", "id": 123456789012345678901234567890}}',
        b'{"limit": -99999999999999999999999999}',
        b'{"where": [["id", "=", 1' + b"0" * 5000 + b"]]}",
        b'{"a":' * 100 + b"1" + b"}" * 100,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"values": {"first_name": "\x00"}',
        b'{"first_name": "Evil", "first_name": {"nested": ' * 40 + b"1" + b"}" * 80,
        b"\x00" * 1000,
        b'{"values": ' + b'{"x": [' * 300 + b"]}" * 300 + b"}",
    ],
)
def test_hostile_bodies(gateway: GatewayProcess, unchanged: None, body: bytes) -> None:
    for path in ("/v4/Contact/create", "/v3/Contact/create"):
        status, answer = raw_request(gateway.port, "POST", path, body)
        assert 400 <= status < 500, (path, status, answer[:300])
    # An update may legitimately match no record (an id beyond any row): then it changes nothing.
    status, answer = raw_request(gateway.port, "POST", "/v4/Contact/update", body)
    assert (400 <= status < 500) or (status == 200 and answer == b"[]"), (status, answer[:300])


def test_oversized_body_and_declared_length(gateway: GatewayProcess, unchanged: None) -> None:
    big = b'{"values": {"first_name": "' + b"x" * 1_200_000 + b'"}}'
    response = httpx.post(
        gateway.url + "/v4/Contact/create",
        content=big,
        timeout=30,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    # A huge declared length with no body: refused before anything is read.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v4/Contact/create HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n"
        )
        answer = sock.recv(4096)
    assert answer.split()[1] == b"413", answer[:200]


@pytest.mark.parametrize(
    "header", ["X-Request-ID: abc\x0bdef", "Authorization: Bearer \x00\x01", "X-Request-ID: a\x00b"]
)
def test_control_characters_in_headers(gateway: GatewayProcess, unchanged: None, header: str) -> None:
    status, body = raw_request(gateway.port, "POST", "/v4/Contact/create", CREATE, headers=(header,))
    assert status == 400, body[:300]  # the HTTP parser refuses them before the gateway runs


def test_control_characters_in_query_values(gateway: GatewayProcess, unchanged: None) -> None:
    status, body = raw_request(gateway.port, "GET", "/v4/Contact/get?first_name=%00%0A&limit=1")
    assert status == 200, body[:300]
