"""On the real CiviCRM 5.77 (tests/real/kit.py), the gateway as its admin user: one read-only
client's malformed reads, which CiviCRM answers with HTTP 500, never make the gateway refuse
another client (issue 25, item 6)."""

from __future__ import annotations

from pathlib import Path

from gateway.flow.clients import hash_token
from tests.conftest import gateway_client, http_settings
from tests.real.kit import require_kit

BAD = "cgw_bad-real-client-0123456789abcdef"
GOOD = "cgw_good-real-client-fedcba9876543210"

# What 5.77 does with each: a DB error envelope (admin) or the masked "Sorry an error
# occurred" (staff), and a PHP fatal (empty text/html 500) for '=' with a list.
MALFORMED = [
    {"select": ["id"], "where": [["display_name", "REGEXP", "("]], "limit": 1},
    {"select": ["id"], "where": [["id", "=", [1, 2]]], "limit": 1},
]


async def test_ten_malformed_reads_leave_another_client_served(tmp_path: Path) -> None:
    kit = require_kit()
    staff_key = tmp_path / "staff.key"
    staff_key.write_text(kit.staff_key)
    clients = tmp_path / "clients.toml"
    clients.write_text(f"""
[clients.bad]
token_sha256 = "{hash_token(BAD)}"
allow = ["v4:Contact.get"]
read_only = true

[clients.bad_staff]
token_sha256 = "{hash_token(BAD + "-staff")}"
allow = ["v4:Contact.get"]
read_only = true
civicrm_api_key_file = "{staff_key}"

[clients.good]
token_sha256 = "{hash_token(GOOD)}"
allow = ["v4:Contact.get"]
read_only = true
""")
    settings = http_settings(
        kit.url, http_api_key=kit.admin_key, clients_file=clients, http_timeout=30, breaker_threshold=5
    )
    statuses = []
    async with gateway_client(settings) as gw:
        for i in range(10):  # in a row; the last five crash PHP (the breaker's threshold)
            token = BAD if i % 2 else BAD + "-staff"
            answer = await gw.post(
                "/v4/Contact/get", json=MALFORMED[i // 5], headers={"Authorization": f"Bearer {token}"}
            )
            statuses.append(answer.status_code)
        good = await gw.post(
            "/v4/Contact/get",
            json={"select": ["id", "display_name"], "limit": 2},
            headers={"Authorization": f"Bearer {GOOD}"},
        )
        breaker = gw._transport.app.state.services.backend.breaker  # type: ignore[attr-defined]
    assert 503 not in statuses and all(s >= 400 for s in statuses), statuses
    assert good.status_code == 200, good.text
    assert len(good.json()) == 2
    assert breaker.state == "closed", breaker.state
