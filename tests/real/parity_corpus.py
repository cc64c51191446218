"""The sandbox-parity corpus: the same calls run through the gateway against a real CiviCRM and
against the sandbox (tests/real/test_sandbox_parity.py).

Everything is generated from the tables below. Every read filters on the run's marker (a
unique last name / source / name prefix), so the real site's other records (its 200 demo
contacts, what other test runs create concurrently) never enter an answer. Strings "@name" in
params stand for the id of the fixture record of that name on the side the call runs on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

ADMIN, STAFF = "admin", "staff"


@dataclass(frozen=True)
class Call:
    label: str
    user: str
    version: int
    entity: str
    action: str
    params: Any
    # a write the staff user is refused: its twin is still run as admin

    @property
    def path(self) -> str:
        return f"/v{self.version}/{self.entity}/{self.action}"


# ---- the fixture: created on both sides, in this order, before the corpus runs ---------------
PEOPLE = [
    # name, first_name, gender, birth_date, job_title, is_deceased, do_not_email, prefix
    ("c1", "Ada", "Female", "1980-12-10", "Analyst", False, True, "Ms."),
    ("c2", "Bob", "Male", "1975-03-02", "Clerk", False, False, "Mr."),
    ("c3", "Cleo", "Female", "1990-07-21", None, False, False, None),
    ("c4", "Dan", "Male", "1962-01-30", "Analyst", True, False, "Dr."),
    ("c5", "Eve", None, None, "Director", False, True, None),
    ("c6", "Finn", "Male", "1999-11-05", None, False, False, "Mr."),
]


def fixture(marker: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, entity, values) in creation order; values may name earlier records as "@name"."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for name, first, gender, birth, job, deceased, no_email, prefix in PEOPLE:
        values: dict[str, Any] = {
            "contact_type": "Individual",
            "first_name": first,
            "last_name": marker,
            "source": marker,
            "is_deceased": deceased,
            "do_not_email": no_email,
        }
        if gender:
            values["gender_id:name"] = gender
        if birth:
            values["birth_date"] = birth
        if job:
            values["job_title"] = job
        if prefix:
            values["prefix_id:label"] = prefix
        out.append((name, "Contact", values))
    out.append(
        (
            "org",
            "Contact",
            {"contact_type": "Organization", "organization_name": f"{marker} Org", "source": marker},
        )
    )
    out.append(
        (
            "house",
            "Contact",
            {"contact_type": "Household", "household_name": f"{marker} House", "source": marker},
        )
    )
    for i, person in enumerate(("c1", "c2", "c3", "c4"), 1):
        out.append(
            (
                f"e{i}",
                "Email",
                {
                    "contact_id": f"@{person}",
                    "email": f"{person}.{marker}@example.org",
                    "location_type_id": 1,
                    "is_primary": True,
                },
            )
        )
    out.append(
        (
            "e5",
            "Email",
            {"contact_id": "@c1", "email": f"work.{marker}@example.com", "location_type_id": 2},
        )
    )
    for i, (person, phone) in enumerate((("c1", "555-0101"), ("c2", "(555) 0102"), ("c3", "555 0103")), 1):
        out.append(
            (
                f"p{i}",
                "Phone",
                {"contact_id": f"@{person}", "phone": phone, "location_type_id": 1, "phone_type_id": 1},
            )
        )
    places = (
        ("c1", "Springfield", "12345", 40.7128, -74.006),
        ("c2", "Shelbyville", "54321", 34.0522, -118.2437),
    )
    for i, (person, city, code, lat, lng) in enumerate(places, 1):
        out.append(
            (
                f"a{i}",
                "Address",
                {
                    "contact_id": f"@{person}",
                    "street_address": f"{i} Main St",
                    "city": city,
                    "postal_code": code,
                    "location_type_id": 1,
                    "is_primary": True,
                    "geo_code_1": lat,
                    "geo_code_2": lng,
                },
            )
        )
    out.append(
        ("t1", "Tag", {"name": f"{marker}-tag", "description": "parity tag", "used_for": ["civicrm_contact"]})
    )
    out.append(("t2", "Tag", {"name": f"{marker}-tag2", "used_for": ["civicrm_contact"]}))
    out.append(
        ("g1", "Group", {"name": f"{marker}_group", "title": f"{marker} group", "description": "parity"})
    )
    for i, person in enumerate(("c1", "c2"), 1):
        out.append(
            (
                f"et{i}",
                "EntityTag",
                {"entity_table": "civicrm_contact", "entity_id": f"@{person}", "tag_id": "@t1"},
            )
        )
    out.append(("et3", "EntityTag", {"entity_table": "civicrm_contact", "entity_id": "@c3", "tag_id": "@t2"}))
    for i, person in enumerate(("c1", "c2", "c3"), 1):
        out.append(
            (f"gc{i}", "GroupContact", {"group_id": "@g1", "contact_id": f"@{person}", "status": "Added"})
        )
    out.append(
        (
            "n1",
            "Note",
            {
                "entity_table": "civicrm_contact",
                "entity_id": "@c1",
                "note": f"note {marker}",
                "subject": "first",
            },
        )
    )
    out.append(
        (
            "n2",
            "Note",
            {"entity_table": "civicrm_contact", "entity_id": "@c2", "note": "second", "subject": marker},
        )
    )
    out.append(
        (
            "act1",
            "Activity",
            {
                "activity_type_id:name": "Meeting",
                "source_contact_id": "@c1",
                "subject": marker,
                "activity_date_time": "2024-05-06 10:00:00",
                "status_id:name": "Completed",
                "duration": 30,
            },
        )
    )
    out.append(
        (
            "act2",
            "Activity",
            {
                "activity_type_id:name": "Phone Call",
                "source_contact_id": "@c2",
                "subject": marker,
                "activity_date_time": "2024-06-07 11:30:00",
                "details": "called",
            },
        )
    )
    return out


def cleanup(marker: str) -> list[tuple[str, list[Any]]]:
    """(entity, where) of everything the fixture and the corpus created on the real site, in
    the order to delete it (each record on its own, contacts for good, trashed ones too)."""
    return [
        ("Activity", [["subject", "=", marker]]),
        ("Tag", [["name", "LIKE", f"{marker}%"]]),
        ("Group", [["name", "LIKE", f"{marker}%"]]),
        ("Email", [["email", "LIKE", f"%{marker}%"]]),  # also those of no contact
        ("Contact", [["source", "LIKE", f"{marker}%"], ["is_deleted", "IN", [True, False]]]),
        ("Contact", [["last_name", "=", marker], ["is_deleted", "IN", [True, False]]]),
    ]


# ---- the corpus -------------------------------------------------------------------------------
ENTITIES = [
    "Activity",
    "Address",
    "Contact",
    "Contribution",
    "Email",
    "EntityTag",
    "Event",
    "Group",
    "GroupContact",
    "Membership",
    "Note",
    "OptionGroup",
    "OptionValue",
    "Participant",
    "Phone",
    "Relationship",
    "Tag",
]

CONTACT_SELECTS: list[list[str]] = [
    ["id", "first_name", "last_name"],
    ["display_name", "sort_name", "gender_id:label"],
    ["first_name", "birth_date", "job_title", "is_deceased"],
    ["first_name", "email_primary.email", "phone_primary.phone"],
    ["first_name", "address_primary.city", "address_primary.postal_code"],
    ["contact_type", "contact_sub_type", "do_not_email", "is_opt_out"],
    ["prefix_id:label", "suffix_id:name", "gender_id:name", "gender_id", "prefix_id"],
    ["first_name", "api_key"],
    ["*"],
]


def contact_wheres(m: str) -> list[list[Any]]:
    return [
        [["last_name", "=", m]],
        [["last_name", "=", m], ["first_name", "LIKE", "A%"]],
        [["source", "=", m], ["gender_id:name", "=", "Female"]],
        [["last_name", "=", m], ["birth_date", ">", "1979-01-01"]],
        [["last_name", "=", m], ["first_name", "IN", ["Ada", "Bob", "Cleo"]]],
        [["last_name", "=", m], ["job_title", "IS NULL"]],
        [["last_name", "=", m], ["OR", [["first_name", "=", "Ada"], ["first_name", "=", "Dan"]]]],
        [["last_name", "=", m], ["email_primary.email", "CONTAINS", "example"]],
        [["last_name", "=", m], ["first_name", "NOT LIKE", "%a%"]],
        [["last_name", "=", m], ["birth_date", "BETWEEN", ["1970-01-01", "1985-12-31"]]],
        [["sort_name", "LIKE", f"{m}, %"], ["is_deceased", "=", False]],
        [["source", "=", m], ["contact_type", "!=", "Individual"]],
    ]


ORDERS: list[dict[str, str]] = [
    {"id": "ASC"},
    {"first_name": "DESC"},
    {"birth_date": "ASC", "id": "DESC"},
    {"sort_name": "ASC"},
]
PAGES: list[dict[str, int]] = [{}, {"limit": 2}, {"limit": 3, "offset": 1}, {}]

FUNCTIONS = [
    "UPPER(first_name) AS up",
    "LOWER(last_name)",
    "CONCAT(first_name, ' ', job_title) AS c",
    "CONCAT_WS('-', first_name, job_title) AS cw",
    "LEFT(first_name, 2) AS l",
    "RIGHT(first_name, 2) AS r",
    "SUBSTRING(first_name, 2, 2) AS s",
    "REPLACE(first_name, 'a', 'x') AS rp",
    "COALESCE(job_title, 'none') AS co",
    "IFNULL(job_title, 'n') AS ifn",
    "ISNULL(job_title) AS isn",
    "NULLIF(first_name, 'Ada') AS nif",
    "IF(is_deceased, 'dead', 'alive') AS iff",
    "YEAR(birth_date) AS y",
    "MONTH(birth_date) AS mo",
    "QUARTER(birth_date) AS q",
    "DAYOFWEEK(birth_date) AS dw",
    "DATE(birth_date) AS d",
    "DATEDIFF(birth_date, '2000-01-01') AS dd",
    "ROUND(3.14159, 2) AS rd",
    "ABS(-4) AS ab",
    "GREATEST(1, 5, 3) AS gr",
    "LEAST(4, 2, 8) AS le",
    "BINARY(first_name) AS bn",
    "(is_deceased + 1) AS eq",
    "EXTRACT(YEAR FROM birth_date) AS ex",
    "UPPER(email_primary.email) AS em",
    "CONCAT(first_name, ' ', last_name) AS full",
]


def contact_reads(m: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, params) of Contact.get."""
    out: list[tuple[str, dict[str, Any]]] = []
    cycle = itertools.count()
    for s_i, select in enumerate(CONTACT_SELECTS):
        for w_i, where in enumerate(contact_wheres(m)):
            n = next(cycle)
            params: dict[str, Any] = {"select": select, "where": where, "orderBy": ORDERS[n % len(ORDERS)]}
            params.update(PAGES[(n // len(ORDERS)) % len(PAGES)])
            out.append((f"get s{s_i} w{w_i}", params))
    mine = [["last_name", "=", m]]
    for f in FUNCTIONS:
        out.append((f"fn {f}", {"select": ["first_name", f], "where": mine, "orderBy": {"id": "ASC"}}))
    aggregates: list[dict[str, Any]] = [
        {"select": ["COUNT(id) AS n"]},
        {"select": ["row_count"]},
        {
            "select": ["gender_id:label", "COUNT(id) AS n"],
            "groupBy": ["gender_id"],
            "orderBy": {"gender_id": "ASC"},
        },
        {"select": ["job_title", "COUNT(id) AS n"], "groupBy": ["job_title"], "having": [["n", ">", 1]]},
        {
            "select": ["job_title", "COUNT(id) AS n"],
            "groupBy": ["job_title"],
            "orderBy": {"n": "DESC", "job_title": "ASC"},
        },
        {"select": ["MAX(birth_date) AS mx", "MIN(birth_date) AS mn"]},
        {"select": ["GROUP_CONCAT(first_name) AS names"], "groupBy": ["last_name"]},
        {"select": ["GROUP_CONCAT(DISTINCT job_title SEPARATOR '|') AS jt"]},
        {"select": ["SUM(is_deceased) AS s", "COUNT(DISTINCT gender_id) AS g"]},
        {
            "select": ["is_deceased", "COUNT(id) AS n"],
            "groupBy": ["is_deceased"],
            "having": [["COUNT(id)", ">=", 1]],
        },
        {
            "select": ["gender_id", "GROUP_CONCAT(first_name ORDER BY first_name DESC) AS f"],
            "groupBy": ["gender_id"],
        },
        {
            "select": ["COUNT(id) AS n", "contact_type"],
            "groupBy": ["contact_type"],
            "orderBy": {"contact_type": "ASC"},
        },
    ]
    for i, agg in enumerate(aggregates):
        where = [["source", "=", m]]
        out.append((f"agg {i}", {"where": where, **agg}))
    joins: list[dict[str, Any]] = [
        {
            "select": ["id", "first_name", "e.email"],
            "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]],
            "orderBy": {"id": "ASC", "e.id": "ASC"},
        },
        {
            "select": ["first_name", "e.email", "e.is_primary"],
            "join": [["Email AS e", "INNER", ["e.contact_id", "=", "id"]]],
            "orderBy": {"e.email": "ASC"},
        },
        {
            "select": ["first_name"],
            "join": [["Email AS e", "EXCLUDE", ["e.contact_id", "=", "id"]]],
            "orderBy": {"id": "ASC"},
        },
        {
            "select": ["first_name", "p.phone", "p.phone_numeric"],
            "join": [["Phone AS p", "INNER", ["p.contact_id", "=", "id"]]],
            "orderBy": {"id": "ASC"},
        },
        {
            "select": ["first_name", "a.city"],
            "join": [["Address AS a", "LEFT", ["a.contact_id", "=", "id"]]],
            "where": [["a.city", "IS NOT NULL"]],
            "orderBy": {"a.city": "ASC"},
        },
        {
            "select": ["first_name", "gc.status", "g.title"],
            "join": [
                ["GroupContact AS gc", "INNER", ["gc.contact_id", "=", "id"]],
                ["Group AS g", "INNER", ["g.id", "=", "gc.group_id"]],
            ],
            "orderBy": {"id": "ASC"},
        },
        {
            "select": ["first_name", "t.name"],
            "join": [
                [
                    "EntityTag AS et",
                    "INNER",
                    ["et.entity_id", "=", "id"],
                    ["et.entity_table", "=", "'civicrm_contact'"],
                ],
                ["Tag AS t", "INNER", ["t.id", "=", "et.tag_id"]],
            ],
            "orderBy": {"id": "ASC"},
        },
        {
            "select": ["first_name", "COUNT(e.id) AS n"],
            "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]],
            "groupBy": ["id"],
            "orderBy": {"id": "ASC"},
        },
        {
            "select": ["first_name", "n.subject"],
            "join": [
                [
                    "Note AS n",
                    "INNER",
                    ["n.entity_id", "=", "id"],
                    ["n.entity_table", "=", "'civicrm_contact'"],
                ]
            ],
            "orderBy": {"id": "ASC"},
        },
    ]
    for i, join in enumerate(joins):
        where = [["last_name", "=", m], *join.pop("where", [])]
        out.append((f"join {i}", {"where": where, **join}))
    chains: list[dict[str, Any]] = [
        {
            "select": ["first_name"],
            "chain": {
                "emails": [
                    "Email",
                    "get",
                    {"where": [["contact_id", "=", "$id"]], "select": ["email"], "orderBy": {"id": "ASC"}},
                ]
            },
        },
        {
            "select": ["first_name"],
            "chain": {
                "n": ["Email", "get", {"where": [["contact_id", "=", "$id"]], "select": ["row_count"]}]
            },
        },
        {
            "select": ["id"],
            "chain": {
                "tags": [
                    "EntityTag",
                    "get",
                    {
                        "where": [["entity_id", "=", "$id"], ["entity_table", "=", "civicrm_contact"]],
                        "select": ["tag_id:label"],
                    },
                    "tag_id",
                ]
            },
        },
        {
            "select": ["first_name"],
            "chain": {
                "x": ["Contact", "get", {"where": [["id", "=", "$id"]], "select": ["display_name"]}, 0]
            },
        },
        {
            "select": ["first_name"],
            "chain": {"lit": ["Email", "get", {"where": [["email", "=", "$job_title"]]}]},
        },
    ]
    filters: list[list[Any]] = [
        [["groups", "IN", ["@g1"]]],
        [["tags", "IN", ["@t1", "@t2"]], ["first_name", "!=", "Bob"]],
        [["last_name", "=", m], ["groups", "NOT IN", ["@g1"]]],
    ]
    for i, where in enumerate(filters):
        out.append((f"filter {i}", {"select": ["first_name"], "where": where, "orderBy": {"id": "ASC"}}))
    for i, chain in enumerate(chains):
        out.append(
            (
                f"chain {i}",
                {
                    "where": [["last_name", "=", m], ["first_name", "IN", ["Ada", "Bob", "Eve"]]],
                    "orderBy": {"id": "ASC"},
                    **chain,
                },
            )
        )
    return out


def near(distance: int, unit: str = "km") -> dict[str, Any]:
    """A proximity filter's value: within ``distance`` of a point in Manhattan."""
    return {"geo_code_1": 40.73, "geo_code_2": -73.99, "distance": distance, "distance_unit": unit}


def other_reads(m: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, entity, params) of get on the fixture's other entities."""
    mine = [["contact_id.last_name", "=", m]]
    tag = [["name", "LIKE", f"{m}%"]]
    rows: list[tuple[str, dict[str, Any]]] = [
        (
            "Email",
            {
                "select": ["email", "is_primary", "location_type_id:name", "contact_id"],
                "where": mine,
                "orderBy": {"id": "ASC"},
            },
        ),
        ("Email", {"select": ["*"], "where": mine, "orderBy": {"email": "ASC"}}),
        (
            "Email",
            {
                "select": ["email", "contact_id.display_name", "contact_id.first_name"],
                "where": [*mine, ["is_primary", "=", False]],
            },
        ),
        (
            "Email",
            {
                "select": ["contact_id", "COUNT(id) AS n"],
                "where": mine,
                "groupBy": ["contact_id"],
                "orderBy": {"contact_id": "ASC"},
            },
        ),
        (
            "Phone",
            {
                "select": ["phone", "phone_numeric", "phone_type_id:label", "is_primary"],
                "where": mine,
                "orderBy": {"id": "ASC"},
            },
        ),
        ("Phone", {"select": ["*"], "where": mine, "orderBy": {"id": "ASC"}}),
        ("Phone", {"select": ["phone"], "where": [*mine, ["phone_numeric", "LIKE", "%0102"]]}),
        (
            "Address",
            {
                "select": ["street_address", "city", "postal_code", "location_type_id:label"],
                "where": mine,
                "orderBy": {"city": "DESC"},
            },
        ),
        ("Address", {"select": ["*"], "where": mine, "orderBy": {"id": "ASC"}}),
        ("Address", {"select": ["city"], "where": [*mine, ["proximity", "<=", near(50)]]}),
        ("Address", {"select": ["city"], "where": [*mine, ["proximity", "<=", near(5000, "miles")]]}),
        (
            "Note",
            {
                "select": ["note", "subject", "entity_table", "entity_id"],
                "where": [["entity_id.last_name", "=", m]],
                "orderBy": {"id": "ASC"},
            },
        ),
        ("Note", {"select": ["*"], "where": [["entity_id.last_name", "=", m]], "orderBy": {"id": "ASC"}}),
        (
            "Tag",
            {
                "select": ["name", "description", "used_for", "is_selectable", "is_tagset"],
                "where": tag,
                "orderBy": {"name": "ASC"},
            },
        ),
        ("Tag", {"select": ["*"], "where": tag, "orderBy": {"name": "ASC"}}),
        ("Tag", {"select": ["name", "used_for:label"], "where": tag, "orderBy": {"name": "DESC"}}),
        (
            "Group",
            {
                "select": ["name", "title", "description", "is_active", "visibility", "group_type"],
                "where": tag,
            },
        ),
        ("Group", {"select": ["*"], "where": tag}),
        (
            "GroupContact",
            {
                "select": ["status", "contact_id.first_name", "group_id:label"],
                "where": mine,
                "orderBy": {"id": "ASC"},
            },
        ),
        ("GroupContact", {"select": ["*"], "where": mine, "orderBy": {"id": "ASC"}}),
        (
            "EntityTag",
            {
                "select": ["entity_table", "entity_id", "tag_id", "tag_id:label"],
                "where": [["tag_id.name", "LIKE", f"{m}%"]],
                "orderBy": {"id": "ASC"},
            },
        ),
        (
            "EntityTag",
            {
                "select": ["tag_id.name", "COUNT(id) AS n"],
                "where": [["tag_id.name", "LIKE", f"{m}%"]],
                "groupBy": ["tag_id"],
                "orderBy": {"tag_id.name": "ASC"},
            },
        ),
        (
            "Activity",
            {
                "select": [
                    "subject",
                    "activity_type_id:name",
                    "status_id:name",
                    "activity_date_time",
                    "duration",
                ],
                "where": [["subject", "=", m]],
                "orderBy": {"activity_date_time": "ASC"},
            },
        ),
        ("Activity", {"select": ["*"], "where": [["subject", "=", m]], "orderBy": {"id": "ASC"}}),
        (
            "Activity",
            {
                "select": ["subject", "details", "priority_id:label", "is_test"],
                "where": [["subject", "=", m], ["activity_type_id:name", "=", "Phone Call"]],
            },
        ),
        (
            "OptionValue",
            {
                "select": ["label", "value", "name"],
                "where": [["option_group_id:name", "=", "gender"]],
                "orderBy": {"value": "ASC"},
            },
        ),
        (
            "OptionValue",
            {
                "select": ["label", "value"],
                "where": [["option_group_id:name", "=", "individual_prefix"]],
                "orderBy": {"weight": "ASC"},
            },
        ),
        (
            "OptionGroup",
            {
                "select": ["name", "title", "is_active"],
                "where": [["name", "IN", ["gender", "individual_prefix"]]],
                "orderBy": {"name": "ASC"},
            },
        ),
    ]
    return [(f"{entity} get {i}", entity, params) for i, (entity, params) in enumerate(rows)]


def metadata_reads() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(label, entity, action, params): getFields and getActions of every emulated entity."""
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    detail = ["name", "data_type", "input_type", "required", "readonly", "fk_entity", "serialize", "nullable"]
    for entity in ENTITIES:
        out.append((f"{entity} getFields names", entity, "getFields", {"select": ["name"]}))
        out.append((f"{entity} getFields detail", entity, "getFields", {"select": detail}))
        out.append((f"{entity} getActions", entity, "getActions", {"select": ["name"]}))
    for entity in ("Contact", "Email", "Activity", "Group"):
        out.append(
            (
                f"{entity} getFields create",
                entity,
                "getFields",
                {
                    "action": "create",
                    "select": ["name", "required", "default_value"],
                    "where": [["required", "=", True]],
                },
            )
        )
    out.append(
        (
            "Contact getFields options",
            "Contact",
            "getFields",
            {
                "loadOptions": True,
                "select": ["name", "options"],
                "where": [["name", "IN", ["gender_id", "prefix_id", "contact_type"]]],
            },
        )
    )
    out.append(("Entity get", "Entity", "get", {"select": ["name"], "where": [["name", "IN", ENTITIES]]}))
    return out


def writes(m: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(label, entity, action, params) of writes, each followed by a read of what it did."""
    w = f"{m}w"  # the corpus's own contacts: source = marker + "w"
    again = {
        "select": ["first_name", "job_title", "do_not_phone", "is_deleted"],
        "where": [["source", "=", w]],
        "orderBy": {"first_name": "ASC"},
    }
    return [
        (
            "create",
            "Contact",
            "create",
            {
                "values": {
                    "contact_type": "Individual",
                    "first_name": "Wes",
                    "last_name": m,
                    "source": w,
                    "job_title": "Tester",
                }
            },
        ),
        (
            "create select",
            "Contact",
            "create",
            {
                "values": {"contact_type": "Individual", "first_name": "Xia", "last_name": m, "source": w},
                "select": ["id", "display_name"],
            },
        ),
        (
            "create org",
            "Contact",
            "create",
            {"values": {"contact_type": "Organization", "organization_name": f"{w} Ltd", "source": w}},
        ),
        ("read back", "Contact", "get", again),
        (
            "update where",
            "Contact",
            "update",
            {
                "where": [["source", "=", w], ["first_name", "=", "Wes"]],
                "values": {"job_title": "Lead", "do_not_phone": True},
            },
        ),
        (
            "update reload",
            "Contact",
            "update",
            {
                "where": [["source", "=", w], ["first_name", "=", "Xia"]],
                "values": {"job_title": "Coder"},
                "reload": True,
                "select": ["job_title"],
            },
        ),
        (
            "update nothing",
            "Contact",
            "update",
            {"where": [["source", "=", w], ["first_name", "=", "Nobody"]], "values": {"job_title": "x"}},
        ),
        ("read back", "Contact", "get", again),
        (
            "save",
            "Contact",
            "save",
            {"records": [{"contact_type": "Individual", "first_name": "Yan", "last_name": m, "source": w}]},
        ),
        (
            "save match",
            "Contact",
            "save",
            {
                "records": [{"first_name": "Yan", "last_name": m, "source": w, "job_title": "Matched"}],
                "match": ["first_name", "last_name"],
            },
        ),
        (
            "save defaults",
            "Contact",
            "save",
            {
                "records": [{"first_name": "Zed"}],
                "defaults": {"contact_type": "Individual", "last_name": m, "source": w},
            },
        ),
        ("read back", "Contact", "get", again),
        (
            "chain create",
            "Contact",
            "create",
            {
                "values": {"contact_type": "Individual", "first_name": "Uma", "last_name": m, "source": w},
                "chain": {
                    "email": [
                        "Email",
                        "create",
                        {"values": {"contact_id": "$id", "email": f"uma.{m}@example.org"}},
                    ]
                },
            },
        ),
        (
            "email create",
            "Email",
            "create",
            {"values": {"contact_id": "@c5", "email": f"eve.{m}@example.org", "is_primary": True}},
        ),
        (
            "email update",
            "Email",
            "update",
            {"where": [["email", "=", f"eve.{m}@example.org"]], "values": {"location_type_id": 2}},
        ),
        (
            "email replace",
            "Email",
            "replace",
            {
                "where": [["contact_id", "=", "@c6"]],
                "records": [{"email": f"finn1.{m}@example.org"}, {"email": f"finn2.{m}@example.org"}],
            },
        ),
        (
            "email read",
            "Email",
            "get",
            {
                "select": ["email", "is_primary", "location_type_id"],
                "where": [["contact_id.last_name", "=", m]],
                "orderBy": {"email": "ASC"},
            },
        ),
        ("phone create", "Phone", "create", {"values": {"contact_id": "@c4", "phone": "+1 (555) 0199 x12"}}),
        (
            "phone read",
            "Phone",
            "get",
            {
                "select": ["phone", "phone_numeric", "is_primary", "location_type_id"],
                "where": [["contact_id", "=", "@c4"]],
            },
        ),
        (
            "address create",
            "Address",
            "create",
            {"values": {"contact_id": "@c3", "city": "Ogdenville", "location_type_id": 1}},
        ),
        (
            "note create",
            "Note",
            "create",
            {
                "values": {
                    "entity_table": "civicrm_contact",
                    "entity_id": "@c3",
                    "note": "third",
                    "subject": m,
                }
            },
        ),
        (
            "note update",
            "Note",
            "update",
            {"where": [["id", "=", "@n2"]], "values": {"note": "second, edited"}},
        ),
        (
            "tag create",
            "Tag",
            "create",
            {"values": {"name": f"{m}-tag3", "description": "made by the corpus"}},
        ),
        (
            "entitytag create",
            "EntityTag",
            "create",
            {"values": {"entity_table": "civicrm_contact", "entity_id": "@c4", "tag_id": "@t2"}},
        ),
        (
            "entitytag delete",
            "EntityTag",
            "delete",
            {"where": [["entity_id", "=", "@c4"], ["tag_id", "=", "@t2"]]},
        ),
        ("group create", "Group", "create", {"values": {"name": f"{m}_group2", "title": f"{m} group 2"}}),
        (
            "groupcontact save",
            "GroupContact",
            "save",
            {"records": [{"group_id": "@g1", "contact_id": "@c4", "status": "Added"}]},
        ),
        (
            "groupcontact update",
            "GroupContact",
            "update",
            {"where": [["id", "=", "@gc3"]], "values": {"status": "Removed"}},
        ),
        (
            "groupcontact read",
            "GroupContact",
            "get",
            {
                "select": ["contact_id", "status"],
                "where": [["group_id", "=", "@g1"]],
                "orderBy": {"contact_id": "ASC"},
            },
        ),
        (
            "activity create",
            "Activity",
            "create",
            {
                "values": {
                    "activity_type_id:name": "Meeting",
                    "source_contact_id": "@c2",
                    "subject": m,
                    "activity_date_time": "2024-07-01 09:00:00",
                }
            },
        ),
        (
            "activity update",
            "Activity",
            "update",
            {"where": [["id", "=", "@act2"]], "values": {"status_id:name": "Cancelled"}},
        ),
        (
            "activity read",
            "Activity",
            "get",
            {
                "select": ["subject", "status_id:name", "activity_date_time"],
                "where": [["subject", "=", m]],
                "orderBy": {"activity_date_time": "ASC"},
            },
        ),
        ("delete trash", "Contact", "delete", {"where": [["source", "=", w], ["first_name", "=", "Zed"]]}),
        (
            "read trashed",
            "Contact",
            "get",
            {
                "select": ["first_name", "is_deleted"],
                "where": [["source", "=", w], ["is_deleted", "=", True]],
            },
        ),
        (
            "delete for good",
            "Contact",
            "delete",
            {"where": [["source", "=", w], ["first_name", "=", "Yan"]], "useTrash": False},
        ),
        (
            "delete nothing",
            "Contact",
            "delete",
            {"where": [["source", "=", w], ["first_name", "=", "Nobody"]]},
        ),
        ("email delete", "Email", "delete", {"where": [["id", "=", "@e5"]]}),
        ("read back", "Contact", "get", again),
    ]


def errors(m: str) -> list[tuple[str, int, str, str, Any]]:
    """(label, version, entity, action, params) the real site refuses."""
    mine = [["last_name", "=", m]]
    return [
        ("unknown entity", 4, "Nope", "get", {}),
        ("unknown action", 4, "Contact", "frobnicate", {}),
        ("unknown field where", 4, "Contact", "get", {"where": [["nope", "=", 1]]}),
        ("unknown field orderBy", 4, "Contact", "get", {"where": mine, "orderBy": {"nope": "ASC"}}),
        ("unknown field select", 4, "Contact", "get", {"where": mine, "select": ["nope"]}),
        ("bad operator", 4, "Contact", "get", {"where": [["last_name", "LIKES", m]]}),
        ("bad direction", 4, "Contact", "get", {"where": mine, "orderBy": {"id": "UP"}}),
        ("negative limit", 4, "Contact", "get", {"where": mine, "limit": -1}),
        ("lowercase function", 4, "Contact", "get", {"where": mine, "select": ["upper(first_name) AS u"]}),
        ("unknown function", 4, "Contact", "get", {"where": mine, "select": ["LENGTH(first_name) AS n"]}),
        ("alias clash", 4, "Contact", "get", {"where": mine, "select": ["UPPER(first_name) AS last_name"]}),
        ("where not a list", 4, "Contact", "get", {"where": ["last_name", "=", m]}),
        ("clause without operator", 4, "Contact", "get", {"where": [["last_name"]]}),
        ("create no type", 4, "Contact", "create", {"values": {"first_name": "Nemo", "last_name": m}}),
        ("activity missing", 4, "Activity", "create", {"values": {"subject": m}}),
        ("email missing", 4, "Email", "create", {"values": {"email": f"x.{m}@example.org"}}),
        (
            "update missing id",
            4,
            "Contact",
            "update",
            {"where": [["id", "=", 2147480000]], "values": {"job_title": "x"}},
        ),
        ("update no where", 4, "Contact", "update", {"values": {"job_title": "x"}}),
        ("delete no where", 4, "Contact", "delete", {}),
        ("replace no records", 4, "Email", "replace", {"where": [["contact_id", "=", "@c1"]]}),
        (
            "bad join",
            4,
            "Contact",
            "get",
            {"where": mine, "join": [["Nope AS n", "LEFT", ["n.id", "=", "id"]]]},
        ),
        ("bad option", 4, "Contact", "get", {"where": [*mine, ["gender_id:name", "=", "Nonexistent"]]}),
        ("bad chain", 4, "Contact", "get", {"where": mine, "chain": {"x": ["Email"]}}),
        (
            "bad value type",
            4,
            "Contact",
            "create",
            {
                "values": {
                    "contact_type": "Individual",
                    "last_name": m,
                    "source": f"{m}w",
                    "birth_date": "not a date",
                }
            },
        ),
        ("bad contact type", 4, "Contact", "create", {"values": {"contact_type": "Robot", "last_name": m}}),
        ("v3 unknown entity", 3, "Nope", "get", {}),
        ("v3 unknown action", 3, "Contact", "frobnicate", {}),
        ("v3 getsingle many", 3, "Contact", "getsingle", {"last_name": m}),
        ("v3 getsingle none", 3, "Contact", "getsingle", {"last_name": m, "first_name": "Nobody"}),
        ("v3 getvalue many", 3, "Contact", "getvalue", {"last_name": m, "return": "first_name"}),
        ("v3 create no type", 3, "Contact", "create", {"first_name": "Nemo", "last_name": m}),
        ("v3 delete no id", 3, "Contact", "delete", {}),
        ("v3 delete missing", 3, "Email", "delete", {"id": 2147480000}),
        ("v3 email create missing", 3, "Email", "create", {"email": f"y.{m}@example.org"}),
    ]


def v3_calls(m: str) -> list[tuple[str, str, str, dict[str, Any], bool]]:
    """(label, entity, action, params, is_write) of APIv3."""
    w = f"{m}v3"
    return [
        (
            "get",
            "Contact",
            "get",
            {"last_name": m, "return": "first_name,last_name", "options": {"sort": "first_name"}},
            False,
        ),
        ("get all fields", "Contact", "get", {"last_name": m, "first_name": "Ada"}, False),
        (
            "get limit",
            "Contact",
            "get",
            {
                "last_name": m,
                "return": ["first_name"],
                "options": {"sort": "first_name DESC", "limit": 2, "offset": 1},
            },
            False,
        ),
        (
            "get gender",
            "Contact",
            "get",
            {
                "last_name": m,
                "gender_id": "Male",
                "return": "first_name,gender_id",
                "options": {"sort": "id"},
            },
            False,
        ),
        (
            "get sequential",
            "Contact",
            "get",
            {
                "last_name": m,
                "sequential": 1,
                "return": "display_name",
                "options": {"sort": "id", "limit": 3},
            },
            False,
        ),
        (
            "get operator",
            "Contact",
            "get",
            {
                "last_name": m,
                "birth_date": {">": "1980-01-01"},
                "return": "first_name",
                "options": {"sort": "id"},
            },
            False,
        ),
        (
            "get IN",
            "Contact",
            "get",
            {
                "last_name": m,
                "first_name": {"IN": ["Ada", "Eve"]},
                "return": "first_name,email",
                "options": {"sort": "id"},
            },
            False,
        ),
        (
            "get limit 0",
            "Contact",
            "get",
            {"last_name": m, "return": "id", "options": {"limit": 0, "sort": "id"}},
            False,
        ),
        (
            "getsingle",
            "Contact",
            "getsingle",
            {"id": "@c1", "return": "first_name,last_name,email,phone"},
            False,
        ),
        ("getsingle all", "Contact", "getsingle", {"id": "@c2"}, False),
        ("getcount", "Contact", "getcount", {"last_name": m}, False),
        ("getcount gender", "Contact", "getcount", {"last_name": m, "gender_id": "Female"}, False),
        ("getvalue", "Contact", "getvalue", {"id": "@c1", "return": "display_name"}, False),
        ("getvalue email", "Email", "getvalue", {"id": "@e1", "return": "email"}, False),
        ("email get", "Email", "get", {"contact_id": "@c1", "options": {"sort": "id"}}, False),
        ("phone get", "Phone", "get", {"contact_id": "@c2", "return": "phone,phone_numeric"}, False),
        ("address get", "Address", "get", {"contact_id": "@c1"}, False),
        ("tag get", "Tag", "get", {"name": f"{m}-tag", "return": "name,description"}, False),
        ("group get", "Group", "get", {"name": f"{m}_group", "return": "title,name"}, False),
        (
            "chain get",
            "Contact",
            "get",
            {
                "id": "@c1",
                "return": "first_name",
                "api.Email.get": {"return": "email", "options": {"sort": "id"}},
            },
            False,
        ),
        (
            "chain spelled",
            "Contact",
            "get",
            {"id": "@c2", "return": "first_name", "api_Phone_get": {}},
            False,
        ),
        ("getfields", "Contact", "getfields", {}, False),
        ("getfields email", "Email", "getfields", {"action": "create"}, False),
        ("getfields tag", "Tag", "getfields", {}, False),
        ("getoptions gender", "Contact", "getoptions", {"field": "gender_id"}, False),
        ("getoptions location", "Email", "getoptions", {"field": "location_type_id"}, False),
        (
            "create",
            "Contact",
            "create",
            {"contact_type": "Individual", "first_name": "Vic", "last_name": m, "source": w},
            True,
        ),
        (
            "create email chained",
            "Contact",
            "create",
            {
                "contact_type": "Individual",
                "first_name": "Val",
                "last_name": m,
                "source": w,
                "api.Email.create": {"email": f"val.{m}@example.org"},
            },
            True,
        ),
        (
            "read created",
            "Contact",
            "get",
            {"source": w, "return": "first_name,email", "options": {"sort": "first_name"}},
            False,
        ),
        ("email create", "Email", "create", {"contact_id": "@c6", "email": f"finn3.{m}@example.org"}, True),
        ("update", "Contact", "create", {"id": "@c6", "job_title": "Updated via v3"}, True),
        ("read updated", "Contact", "getvalue", {"id": "@c6", "return": "job_title"}, False),
        ("delete", "Email", "delete", {"id": "@e4"}, True),
        ("getcount after", "Email", "getcount", {"contact_id": "@c4"}, False),
    ]


def corpus(marker: str) -> list[Call]:
    """Every call, in the order they run (the same on both sides)."""
    calls: list[Call] = []
    users = (ADMIN, STAFF)
    for label, params in contact_reads(marker):
        for user in users:
            calls.append(Call(label, user, 4, "Contact", "get", params))
    for label, entity, params in other_reads(marker):
        for user in users:
            calls.append(Call(label, user, 4, entity, "get", params))
    for label, entity, action, params in metadata_reads():
        for user in users:
            calls.append(Call(label, user, 4, entity, action, params))
    for label, version, entity, action, params in errors(marker):
        for user in users:
            calls.append(Call(f"error {label}", user, version, entity, action, params))
    for label, entity, action, params, is_write in v3_calls(marker):
        # a staff write is refused (nothing changes), then the admin one runs
        for user in (STAFF, ADMIN) if is_write else users:
            calls.append(Call(f"v3 {label}", user, 3, entity, action, params))
    for label, entity, action, params in writes(marker):
        for user in (STAFF, ADMIN) if action != "get" else users:
            calls.append(Call(f"write {label}", user, 4, entity, action, params))
    return calls
