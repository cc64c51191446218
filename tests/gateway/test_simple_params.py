"""The simple field-value form gives the same results as the native APIv4 form."""

from __future__ import annotations

import pytest


@pytest.fixture
async def people(gw):
    made = []
    for first, last, kind in [
        ("Ada", "Lovelace", "Individual"),
        ("Grace", "Hopper", "Individual"),
        ("Alan", "Turing", "Individual"),
        ("Acme", None, "Organization"),
    ]:
        values = {"contact_type": kind}
        if kind == "Organization":
            values["organization_name"] = first
        else:
            values.update(first_name=first, last_name=last)
        response = await gw.post("/v4/Contact/create", json={"values": values})
        assert response.status_code == 200, response.text
        made.append(response.json()[0])
    return made


@pytest.mark.parametrize(
    "simple,native",
    [
        (
            {"contact_type": "Individual", "last_name": "Hopper"},
            {"where": [["contact_type", "=", "Individual"], ["last_name", "=", "Hopper"]]},
        ),
        ({"contact_type": "Organization"}, {"where": [["contact_type", "=", "Organization"]]}),
        (
            {"last_name": ["Hopper", "Turing"], "select": ["id", "last_name"], "orderBy": {"id": "ASC"}},
            {
                "where": [["last_name", "IN", ["Hopper", "Turing"]]],
                "select": ["id", "last_name"],
                "orderBy": {"id": "ASC"},
            },
        ),
    ],
)
async def test_get_simple_equals_native(gw, people, simple, native):
    a = await gw.post("/v4/Contact/get", json=simple)
    b = await gw.post("/v4/Contact/get", json=native)
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json() and a.json()


async def test_get_simple_over_query_string_equals_native(gw, people):
    a = await gw.get("/v4/Contact/get", params={"last_name": "Turing", "select": "id,first_name"})
    b = await gw.post(
        "/v4/Contact/get", json={"where": [["last_name", "=", "Turing"]], "select": ["id", "first_name"]}
    )
    assert a.json() == b.json() == [{"id": people[2]["id"], "first_name": "Alan"}]


async def test_create_simple_equals_native(gw):
    a = (
        await gw.post(
            "/v4/Contact/create", json={"contact_type": "Organization", "organization_name": "Super Org"}
        )
    ).json()[0]
    b = (
        await gw.post(
            "/v4/Contact/create",
            json={"values": {"contact_type": "Organization", "organization_name": "Super Org"}},
        )
    ).json()[0]
    assert a["id"] != b["id"]
    ignore = {"id", "created_date", "modified_date", "hash"}
    assert {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


async def test_update_simple_equals_native(gw, people):
    ada, grace = people[0], people[1]
    a = await gw.post("/v4/Contact/update", json={"id": ada["id"], "job_title": "Analyst"})
    b = await gw.post(
        "/v4/Contact/update", json={"where": [["id", "=", grace["id"]]], "values": {"job_title": "Analyst"}}
    )
    assert a.status_code == b.status_code == 200
    check = await gw.post(
        "/v4/Contact/get", json={"job_title": "Analyst", "select": ["id"], "orderBy": {"id": "ASC"}}
    )
    assert check.json() == [{"id": ada["id"]}, {"id": grace["id"]}]


async def test_delete_simple_equals_native(gw, people):
    a = await gw.post("/v4/Contact/delete", json={"id": people[2]["id"], "useTrash": False})
    b = await gw.post("/v4/Contact/delete", json={"where": [["id", "=", people[3]["id"]]], "useTrash": False})
    assert a.json() == [{"id": people[2]["id"]}] and b.json() == [{"id": people[3]["id"]}]
