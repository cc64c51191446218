"""The README's flows on a real CiviCRM 5.77, on every backend (http, cv, pipe) and as both
CiviCRM users: the admin writes, the least-privileged ``staff`` user reads and is refused every
write with 403 (never a 404 because CiviCRM's getActions hides the action from it).

Each test scopes its reads to the records it made (``marker``) and deletes them on leaving.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from typing import Any

import orjson

from tests.conftest import ROOT, assert_problem
from tests.real.conftest import Gateways, RealGateway, make_contact


def denied(gw: RealGateway, response: Any) -> dict[str, Any]:
    """A write refused to the staff user: 403 civicrm-permission-denied on every backend."""
    return assert_problem(response, 403, "civicrm-permission-denied")


def audit_records(gw: RealGateway, query: str, wanted: int = 1) -> list[dict[str, Any]]:
    """``GET /audit?<query>`` once at least ``wanted`` records are there (they are written in
    the background, after the answer)."""
    deadline = time.monotonic() + 10
    while True:
        response = gw.get(f"/audit?{query}")
        assert response.status_code == 200, response.text
        records = response.json()
        if len(records) >= wanted or time.monotonic() > deadline:
            return list(records)
        time.sleep(0.1)


def test_v4_create_get_with_joins_update_delete(gw: RealGateway, gateways: Gateways, marker: str) -> None:
    values = {"contact_type": "Individual", "first_name": "Ada", "last_name": marker, "source": marker}
    if not gw.admin:
        denied(gw, gw.post("/v4/Contact/create", values))
        contact = make_contact(gateways, marker, first_name="Ada")
    else:
        created = gw.ok("/v4/Contact/create", values)  # the simple form: pairs become values
        assert len(created) == 1 and created[0]["last_name"] == marker
        contact = created[0]
        gw.ok("/v4/Email/create", {"values": {"contact_id": contact["id"], "email": f"{marker}@example.org"}})
    cid = contact["id"]

    joined = gw.ok(
        "/v4/Contact/get",
        {
            "select": ["id", "display_name", "e.email", "email_primary.email"],
            "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]],
            "where": [["source", "=", marker]],
        },
    )
    assert joined == [
        {
            "id": cid,
            "display_name": f"Ada {marker}",
            "e.email": f"{marker}@example.org",
            "email_primary.email": f"{marker}@example.org",
        }
    ]
    # Reads over GET, and the match count CiviCRM (or, on cv and pipe, the gateway) counted.
    by_query = gw.get(f"/v4/Contact/get?last_name={marker}&select=id,display_name&orderBy=id:desc&limit=5")
    assert by_query.status_code == 200 and by_query.json() == [{"id": cid, "display_name": f"Ada {marker}"}]
    counted = gw.get(f"/v4/Contact/get?source={marker}&select=row_count")
    assert counted.status_code == 200 and counted.headers["x-total-count"] == "1", counted.text

    update = {"id": cid, "job_title": "Analyst"}
    if not gw.admin:
        denied(gw, gw.post("/v4/Contact/update", update))
        denied(gw, gw.post("/v4/Contact/delete", {"id": cid}))
        assert gw.ok("/v4/Contact/get", {"select": ["job_title"], "where": [["id", "=", cid]]}) == [
            {"id": cid, "job_title": None}
        ]
        return
    updated = gw.ok("/v4/Contact/update", update)
    assert updated[0]["id"] == cid and updated[0]["job_title"] == "Analyst"
    assert gw.ok("/v4/Contact/delete", {"id": cid}) == [{"id": cid}]
    assert gw.ok("/v4/Contact/get", {"select": ["id"], "where": [["source", "=", marker]]}) == []
    # to the trash (useTrash, CiviCRM's default): still there when asked for
    trashed = gw.ok(
        "/v4/Contact/get", {"select": ["id"], "where": [["id", "=", cid], ["is_deleted", "=", True]]}
    )
    assert trashed == [{"id": cid}]


def test_v3_get_getsingle_getcount_getvalue_create_delete(
    gw: RealGateway, gateways: Gateways, marker: str
) -> None:
    values = {"contact_type": "Individual", "first_name": "Grace", "last_name": marker, "source": marker}
    if gw.admin:
        created = gw.ok("/v3/Contact/create", values)
        assert len(created) == 1 and created[0]["last_name"] == marker
        cid = int(created[0]["id"])
    else:
        denied(gw, gw.post("/v3/Contact/create", values))
        cid = make_contact(gateways, marker, first_name="Grace")["id"]

    got = gw.ok("/v3/Contact/get", {"last_name": marker, "return": "display_name"})
    # (5.77 also returns the field filtered on, last_name; the sandbox does not)
    assert len(got) == 1 and got[0]["id"] == str(cid), got
    assert {k: got[0][k] for k in ("contact_id", "display_name", "contact_is_deleted")} == {
        "contact_id": str(cid),
        "display_name": f"Grace {marker}",
        "contact_is_deleted": "0",
    }
    single = gw.ok("/v3/Contact/getsingle", {"id": cid})
    assert single["id"] == str(cid) and single["last_name"] == marker
    assert gw.ok("/v3/Contact/getcount", {"last_name": marker}) == 1
    # The README's getvalue, over POST and GET (5.77 needs ``return`` as one string).
    assert gw.ok("/v3/Contact/getvalue", {"id": cid, "return": "display_name"}) == f"Grace {marker}"
    by_get = gw.get(f"/v3/Contact/getvalue?id={cid}&return=display_name")
    assert by_get.status_code == 200 and by_get.json() == f"Grace {marker}"

    if not gw.admin:
        denied(gw, gw.post("/v3/Contact/delete", {"id": cid}))
        return
    gw.ok("/v3/Contact/delete", {"id": cid})
    assert gw.ok("/v3/Contact/getcount", {"last_name": marker}) == 0


def test_batches(gw: RealGateway, gateways: Gateways, marker: str) -> None:
    cid = make_contact(gateways, marker)["id"]
    v4 = gw.ok(
        "/v4/batch",
        {
            "people": ["Contact", "get", {"select": ["id"], "where": [["source", "=", marker]]}],
            "tags": ["Tag", "get", {"select": ["id"], "limit": 1}],
            "mistake": ["Contact", "get", {"where": [["nope", "=", 1]]}],
            "write": ["Contact", "update", {"where": [["id", "=", cid]], "values": {"job_title": "Batch"}}],
        },
    )
    assert v4["people"] == {"status": 200, "values": [{"id": cid}]}
    assert v4["tags"]["status"] == 200
    assert v4["mistake"]["status"] == 400 and v4["mistake"]["error"]["type"] == "/problems/unknown-field"
    if gw.admin:
        assert v4["write"]["status"] == 200 and v4["write"]["values"][0]["job_title"] == "Batch"
    else:
        assert v4["write"]["status"] == 403, v4["write"]
        assert v4["write"]["error"]["type"] == "/problems/civicrm-permission-denied"

    v3 = gw.ok(
        "/v3/batch",
        {
            "count": ["Contact", "getcount", {"last_name": marker}],
            "one": ["Contact", "getsingle", {"id": cid, "return": "last_name"}],
            "nothing": ["Contact", "getsingle", {"id": 2_000_000_000}],
        },
    )
    assert v3["count"] == {"status": 200, "values": 1}
    assert v3["one"]["status"] == 200 and v3["one"]["values"]["last_name"] == marker
    assert v3["nothing"]["status"] == 404 and v3["nothing"]["error"]["type"] == "/problems/record-not-found"


def test_chains(gw: RealGateway, gateways: Gateways, marker: str) -> None:
    chain = {
        "email": ["Email", "create", {"values": {"contact_id": "$id", "email": f"{marker}@example.org"}}]
    }
    values = {"contact_type": "Individual", "first_name": "Chained", "last_name": marker, "source": marker}
    if gw.admin:
        created = gw.ok("/v4/Contact/create", {"values": values, "chain": chain})
        assert created[0]["email"][0]["email"] == f"{marker}@example.org"
        cid = created[0]["id"]
    else:
        denied(gw, gw.post("/v4/Contact/create", {"values": values, "chain": chain}))
        cid = make_contact(gateways, marker, first_name="Chained")["id"]
    got = gw.ok(
        "/v4/Contact/get",
        {
            "select": ["id"],
            "where": [["id", "=", cid]],
            "chain": {
                "emails": ["Email", "get", {"select": ["email"], "where": [["contact_id", "=", "$id"]]}]
            },
        },
    )
    assert [(r["id"], [e["email"] for e in r["emails"]]) for r in got] == [(cid, [f"{marker}@example.org"])]
    # A read that chains a write is a write: refused to staff before anything runs.
    writes = {"values": {"job_title": "Chain"}, "where": [["id", "=", "$id"]]}
    response = gw.post(
        "/v4/Contact/get",
        {"select": ["id"], "where": [["id", "=", cid]], "chain": {"w": ["Contact", "update", writes]}},
    )
    if gw.admin:
        assert response.status_code == 200, response.text
        assert response.json()[0]["w"][0]["job_title"] == "Chain"
    else:
        assert response.status_code == 403, response.text


def test_export_formats(gw: RealGateway, gateways: Gateways, marker: str) -> None:
    """JSON, NDJSON and CSV (by ``format=`` and by ``Accept``), a large get streamed as one JSON
    array in id order, and ``civicrm-gateway export --url`` through the running gateway."""
    ids = [make_contact(gateways, marker, first_name=name)["id"] for name in ("Ann", "Bob")]
    query = f"select=id,first_name&source={marker}&orderBy=id"
    expected = [{"id": ids[0], "first_name": "Ann"}, {"id": ids[1], "first_name": "Bob"}]

    plain = gw.get(f"/v4/Contact/get?{query}")
    assert plain.json() == expected and plain.headers["x-result-count"] == "2"
    for extra, accept in (("&format=ndjson", "*/*"), ("", "application/x-ndjson")):
        ndjson = gw.get(f"/v4/Contact/get?{query}{extra}", headers={"Accept": accept})
        assert ndjson.status_code == 200 and ndjson.headers["content-type"].startswith("application/x-ndjson")
        assert [orjson.loads(line) for line in ndjson.text.splitlines()] == expected
    for extra, accept in (("&format=csv", "*/*"), ("", "text/csv")):
        answer = gw.get(f"/v4/Contact/get?{query}{extra}", headers={"Accept": accept})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert rows == [{"id": str(r["id"]), "first_name": r["first_name"]} for r in expected]

    # No limit and more rows than a page (CIVI_GATEWAY_EXPORT_PAGE_SIZE=100): streamed.
    streamed = gw.get("/v4/Contact/get?select=id")
    assert streamed.status_code == 200 and streamed.headers.get("x-streamed") == "true"
    all_ids = [row["id"] for row in streamed.json()]
    assert all_ids == sorted(set(all_ids)) and len(all_ids) > 200 and set(ids) <= set(all_ids)

    where = orjson.dumps([["source", "=", marker]]).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    argv = ["export", "Contact", "--url", gw.url, "--select", "id,first_name", "--where", where]
    out = subprocess.run(
        [sys.executable, "-m", "gateway", *argv, "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["id,first_name", f"{ids[0]},Ann", f"{ids[1]},Bob"]


def test_idempotency_key_replays_and_audit(gw: RealGateway, marker: str) -> None:
    key = f"signup-{marker}-{gw.name}"
    values = {"contact_type": "Individual", "first_name": "Once", "last_name": marker, "source": marker}
    first = gw.post("/v4/Contact/create", values, headers={"Idempotency-Key": key})
    again = gw.post("/v4/Contact/create", values, headers={"Idempotency-Key": key})
    if not gw.admin:
        denied(gw, first)
        denied(gw, again)
        records = audit_records(gw, "entity=Contact&action=create&outcome=denied&limit=5")
        assert records and records[0]["status"] == 403, records
        assert records[0]["problem"] == "civicrm-permission-denied"
        return
    assert first.status_code == 200, first.text
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    counted = gw.get(f"/v4/Contact/get?source={marker}&select=row_count")
    assert counted.headers["x-total-count"] == "1"
    reused = gw.post(
        "/v4/Contact/create", {**values, "first_name": "Twice"}, headers={"Idempotency-Key": key}
    )
    assert_problem(reused, 422, "idempotency-key-reused")

    cid = first.json()[0]["id"]
    records = audit_records(gw, f"entity=Contact&id={cid}", wanted=2)
    create = [r for r in records if r["action"] == "create" and not r["replayed"]]
    assert len(create) == 1, records
    assert create[0]["ids"] == [cid] and create[0]["status"] == 200
    assert create[0]["idempotency_key"] == key
    assert set(create[0]["fields"]) == {"contact_type", "first_name", "last_name", "source"}
    assert any(r["replayed"] for r in records), records
