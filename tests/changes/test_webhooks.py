"""Webhooks on the sandbox: signed deliveries to a loopback receiver, retried across a
restart, and only to hosts the operator allowed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from gateway.settings import Settings
from tests.conftest import assert_problem, free_port, gateway_client

TOKEN = "cgw_hooks-client-token-0123456789"


class Receiver:
    """A loopback HTTP receiver recording each POST (headers and body)."""

    def __init__(self, port: int) -> None:
        received = self.received = []  # type: list[tuple[dict[str, str], bytes]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def settings(tmp_path: Path, port: int) -> Settings:
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f'[clients.hooks]\ntoken_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n'
        "webhooks = true\n"
        'fields = { Contact = ["id", "display_name", "modified_date", "first_name", "last_name"] }\n'
    )
    return Settings(
        backend="sandbox",
        sandbox_demo=2,
        sandbox_db=str(tmp_path / "sb.sqlite"),
        state_dir=tmp_path / "state",
        clients_file=clients,
        webhook_hosts=[f"127.0.0.1:{port}"],
        changes_poll_interval=0.2,
        changes_delete_scan_seconds=0,
        webhook_retry_base=0.2,
        webhook_retry_max=0.5,
    )


async def eventually(check: Any, seconds: float = 30) -> None:
    for _ in range(int(seconds * 10)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not reached in time")


async def test_deliveries_are_signed_retried_and_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    config = settings(tmp_path, port)
    url = f"http://127.0.0.1:{port}/hook"
    async with gateway_client(config, token=TOKEN) as gw:
        # only hosts the operator listed; never CiviCRM or another internal address
        for target in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest", "http://localhost:8080/"):
            assert_problem(
                await gw.post("/webhooks", json={"url": target, "entity": "Contact"}),
                403,
                "gateway-policy-denied",
            )
        assert_problem(
            await gw.post("/webhooks", json={"url": f"http://u:p@127.0.0.1:{port}/", "entity": "Contact"}),
            400,
            "invalid-request",
        )
        made = await gw.post("/webhooks", json={"url": url, "entity": "Contact", "select": ["display_name"]})
        assert made.status_code == 201, made.text
        sub = made.json()
        assert sub["secret"].startswith("whsec_")
        # standard base64, padded: receivers checking by hand (docs/changes.md) decode it as is
        assert len(base64.b64decode(sub["secret"].removeprefix("whsec_"), validate=True)) == 24
        assert "secret" not in (await gw.get(f"/webhooks/{sub['id']}")).json()
        created = await gw.post(
            "/v4/Contact/create", json={"values": {"first_name": "Hook", "last_name": "One"}}
        )
        new_id = created.json()[0]["id"]
        # nobody listens yet: the delivery fails and is retried
        for _ in range(100):
            rows = (await gw.get(f"/webhooks/{sub['id']}/deliveries")).json()
            if rows and rows[0]["attempts"] >= 1:
                break
            await asyncio.sleep(0.1)
        assert rows[0]["status"] == "pending" and rows[0]["last_error"]
    # the gateway stops; the receiver starts; a new gateway on the same state folder delivers
    receiver = Receiver(port)
    try:
        async with gateway_client(config, token=TOKEN) as gw:
            await eventually(lambda: len(receiver.received) >= 1)
            await gw.post("/v4/Contact/delete", json={"where": [["id", "=", new_id]], "useTrash": False})
            await eventually(lambda: len(receiver.received) >= 2)
            await gw.delete(f"/webhooks/{sub['id']}")
    finally:
        receiver.stop()
    payloads = []
    for headers, body in receiver.received:
        lower = {k.lower(): v for k, v in headers.items()}
        payloads.append(Webhook(sub["secret"]).verify(body, lower))  # raises unless signed right
        assert lower["webhook-id"].startswith("msg_")
    assert [(p["type"], p["data"]["id"]) for p in payloads[:2]] == [
        ("Contact.created", new_id),
        ("Contact.deleted", new_id),
    ]
    assert payloads[0]["data"]["display_name"] == "Hook One"
    assert set(payloads[0]["data"]) == {"id", "display_name", "_change"}
    assert orjson.loads(receiver.received[0][1]) == payloads[0]
