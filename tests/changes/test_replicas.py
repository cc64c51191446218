"""Two gateway replicas (real uvicorn processes, their own state folders) sharing one Redis
and one sandbox database: every change, made in the database directly or through either
replica, is delivered exactly once; a replica killed hands its poll lease over when it
expires; a cursor one replica issued resumes on the other."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import GatewayProcess, free_port

pytestmark = pytest.mark.slow

TOKEN = "cgw_replica-client-token-0123456789"
POLL_LEASE = "civicrm-gateway:webhooks:lease:poll:contact"


class Receiver:
    """A loopback HTTP receiver recording each POST: (path, headers, body)."""

    def __init__(self, port: int) -> None:
        received = self.received = []  # type: list[tuple[str, dict[str, str], bytes]]
        self.lock = threading.Lock()
        lock = self.lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with lock:
                    received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, path: str) -> list[tuple[str, int]]:
        with self.lock:
            rows = [orjson.loads(body) for p, _, body in self.received if p == path]
        return [(r["type"], r["data"]["id"]) for r in rows]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(check: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(free_port())
    yield found
    found.stop()


def api(gw: GatewayProcess, path: str, body: Any = None, method: str = "POST") -> httpx.Response:
    return httpx.request(
        method, gw.url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )


def test_two_replicas_deliver_each_change_once_and_take_over_a_dead_ones_lease(
    tmp_path: Path, redis_url: str, receiver: Receiver
) -> None:
    from redis import Redis

    from gateway.sandbox.database import open_sandbox

    db = tmp_path / "sb.sqlite"
    direct = open_sandbox(str(db), 0)  # CiviCRM itself: changes made beside the gateways

    def made(last_name: str) -> int:
        values = {"contact_type": "Individual", "first_name": "Direct", "last_name": last_name}
        return int(
            direct.api4("Contact", "create", {"values": values, "checkPermissions": False})["values"][0]["id"]
        )

    clients = tmp_path / "clients.toml"
    clients.write_text(
        f'[clients.hooks]\ntoken_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\nwebhooks = true\n'
    )
    port = receiver.server.server_address[1]
    env = {
        "CIVI_GATEWAY_BACKEND": "sandbox",
        "CIVI_GATEWAY_SANDBOX_DB": str(db),
        "CIVI_GATEWAY_SANDBOX_DEMO": "0",
        "CIVI_GATEWAY_CLIENTS_FILE": str(clients),
        "CIVI_GATEWAY_CHANGES_STORE": "redis",
        "CIVI_GATEWAY_RATE_LIMIT_STORAGE": redis_url,
        "CIVI_GATEWAY_WEBHOOK_HOSTS": f'["127.0.0.1:{port}"]',
        "CIVI_GATEWAY_CHANGES_POLL_INTERVAL": "0.2",
        "CIVI_GATEWAY_CHANGES_DELETE_SCAN_SECONDS": "0",
        "CIVI_GATEWAY_WEBHOOK_TIMEOUT": "2",
    }
    redis = Redis.from_url(redis_url, decode_responses=True)
    one = GatewayProcess({**env, "CIVI_GATEWAY_STATE_DIR": str(tmp_path / "state-one")}, tmp_path)
    two: GatewayProcess | None = None
    try:
        one.wait_ready(60)
        hook = f"http://127.0.0.1:{port}"
        subs = {}
        for path in ("/a", "/b"):
            made_sub = api(
                one, "/webhooks", {"url": hook + path, "entity": "Contact", "select": ["last_name"]}
            )
            assert made_sub.status_code == 201, made_sub.text
            subs[path] = made_sub.json()
        feed = api(one, "/v4/Contact/changes", {"select": ["last_name"]})
        assert feed.status_code == 200, feed.text
        cursor = feed.headers["X-Next-Cursor"]
        # replica one polls Contact (it was alone): its lease, before the second starts
        wait_until(lambda: redis.get(POLL_LEASE) is not None)
        first_owner = redis.get(POLL_LEASE)
        two = GatewayProcess({**env, "CIVI_GATEWAY_STATE_DIR": str(tmp_path / "state-two")}, tmp_path)
        two.wait_ready(60)
        # the second replica sees the subscriptions made through the first
        assert sorted(s["id"] for s in api(two, "/webhooks", method="GET").json()) == sorted(
            s["id"] for s in subs.values()
        )

        # --- both alive: changes directly in the database and through each replica ----------
        expected: list[tuple[str, int]] = []
        for n in range(3):
            expected.append(("Contact.created", made(f"Direct{n}")))
        for n, gw in enumerate((one, two, one, two)):
            answer = api(gw, "/v4/Contact/create", {"values": {"first_name": "Via", "last_name": f"Gw{n}"}})
            assert answer.status_code == 200, answer.text
            expected.append(("Contact.created", answer.json()[0]["id"]))
        # a sentinel last: a subscription's deliveries go out in order, so once it arrived any
        # duplicate queued before it would have arrived too
        sentinel = made("Sentinel1")
        for path in subs:
            wait_until(lambda path=path: ("Contact.created", sentinel) in receiver.events(path))
            assert Counter(receiver.events(path)) == Counter([*expected, ("Contact.created", sentinel)])
        assert redis.get(POLL_LEASE) == first_owner  # one poller all along

        # a cursor issued by one replica resumes on the other, and back
        page = api(two, "/v4/Contact/changes", {"cursor": cursor, "limit": 4})
        assert page.status_code == 200, page.text
        rest = api(one, "/v4/Contact/changes", {"cursor": page.headers["X-Next-Cursor"]})
        assert rest.status_code == 200, rest.text
        ids = [r["id"] for r in [*page.json(), *rest.json()]]
        assert ids == [i for _, i in expected] + [sentinel]

        # --- the poller dies without a word: the other takes its lease when it expires ---------
        one.proc.kill()
        one.proc.wait()
        later = [("Contact.created", made("Direct9"))]
        answer = api(two, "/v4/Contact/create", {"values": {"first_name": "Via", "last_name": "After"}})
        later.append(("Contact.created", answer.json()[0]["id"]))
        direct.api4(
            "Contact",
            "update",
            {"values": {"id": later[0][1], "last_name": "Renamed"}, "checkPermissions": False},
        )
        later.append(("Contact.updated", later[0][1]))
        sentinel2 = made("Sentinel2")
        for path in subs:
            wait_until(lambda path=path: ("Contact.created", sentinel2) in receiver.events(path))
        new_owner = redis.get(POLL_LEASE)
        assert new_owner is not None and new_owner != first_owner
        all_expected = [*expected, ("Contact.created", sentinel), *later, ("Contact.created", sentinel2)]
        for path, sub in subs.items():
            got = receiver.events(path)
            # the created and the update of Direct9 may be one change if both happened before
            # a poll (a record saved several times between polls is reported once, as it now is)
            wanted = Counter(all_expected)
            if got.count(("Contact.updated", later[0][1])) == 0:
                wanted.pop(("Contact.updated", later[0][1]))
            assert Counter(got) == wanted
            with receiver.lock:
                mine = [(h, b) for p, h, b in receiver.received if p == path]
            ids = [h["webhook-id"] for h, _ in mine]
            assert len(ids) == len(set(ids))
            for headers, body in mine:
                Webhook(sub["secret"]).verify(body, headers)  # raises unless signed right
            rows = api(two, f"/webhooks/{sub['id']}/deliveries", method="GET").json()
            assert len(rows) == len(got)
            assert {(r["status"], r["attempts"]) for r in rows} == {("delivered", 1)}
    finally:
        for gw in (one, two):
            if gw is not None:
                gw.stop()
        redis.close()
        direct.close()
