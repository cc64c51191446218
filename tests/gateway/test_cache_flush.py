"""POST /cache/flush makes every client's next calls fetch metadata again: only the operator's
clients may ask for it (a client that could flush at will could slow all the others down)."""

from __future__ import annotations

from pathlib import Path

from gateway.flow.clients import hash_token
from gateway.settings import Settings
from tests.conftest import TRUSTED_CLIENTS, TRUSTED_TOKEN, assert_problem, gateway_client

CLIENTS = (
    f'[clients.reader]\ntoken_sha256 = "{hash_token("reader-token-123")}"\nallow = ["*"]\n'
    + TRUSTED_CLIENTS.read_text()
)


async def test_only_trusted_clients_flush(tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(CLIENTS)
    settings = Settings(backend="sandbox", sandbox_demo=0, clients_file=clients)
    async with gateway_client(settings, token="reader-token-123") as reader:
        body = assert_problem(await reader.post("/cache/flush"), 403, "gateway-policy-denied")
        assert "trusted" in body["detail"]
    async with gateway_client(settings, token=TRUSTED_TOKEN) as operator:
        flushed = await operator.post("/cache/flush")
        assert flushed.status_code == 200 and "flushed" in flushed.json()
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=0)) as tokenless:
        # without tokens, the loopback caller is the operator (ASGI test clients are 127.0.0.1)
        assert (await tokenless.post("/cache/flush")).status_code == 200
        proxied = await tokenless.post("/cache/flush", headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code in (401, 403), proxied.text
